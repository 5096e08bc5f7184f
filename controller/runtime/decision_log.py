"""What one tick leaves behind outside the state store: its ``TickResult`` and its ``scale_decision`` log lines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from pdscale.controller.core.types import Decision, Forecast, PoolObservation, PoolState, Signal
from pdscale.controller.runtime.record import PoolOutcome

__all__ = ["TickResult", "log_scale_decisions"]

log = structlog.get_logger("pdscale.loop")


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick saw, decided and did."""

    now_s: float
    decision: Decision
    observations: Mapping[str, PoolObservation]
    states: Mapping[str, PoolState]
    forecasts: Mapping[str, Mapping[Signal, Forecast]]
    outcomes: Mapping[str, PoolOutcome]
    record_id: int
    duration_s: float


def log_scale_decisions(
    decision: Decision,
    observations: Mapping[str, PoolObservation],
    states: Mapping[str, PoolState],
    forecasts: Mapping[str, Mapping[Signal, Forecast]],
    outcomes: Mapping[str, PoolOutcome],
    default_quantile: float,
) -> None:
    """One ``scale_decision`` line per pool with its inputs, reason and outcome."""
    for name, d in decision.pools.items():
        obs = observations[name]
        st = states[name]
        # The quantile the policy sized from (its estimate says), so forecast= is the value its reason names.
        q = d.estimate.get("forecast_quantile", default_quantile)
        fc = {s.value: round(f.quantile(q), 3) for s, f in forecasts.get(name, {}).items()}
        log.info(
            "scale_decision",
            pool=name,
            now_s=decision.time_s,
            policy=decision.policy,
            previous=d.previous,
            proposed=d.proposed,
            target=d.target,
            direction=d.direction.value,
            reason=d.reason,
            guards=list(d.guards),
            data=obs.state.value,
            data_reason=obs.reason or None,
            ready=st.ready,
            starting=st.starting,
            draining=st.draining,
            forecast=fc,
            forecast_quantile=q,
            outcome=outcomes[name].outcome.value if name in outcomes else None,
        )
