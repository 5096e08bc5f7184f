"""Parts of the control loop that do no I/O: actuation backoff and the JSON summary of a tick's inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import Policy
from pdscale.controller.core.types import (
    SLO,
    DataState,
    Decision,
    ErrorClass,
    Forecast,
    Override,
    PoolObservation,
    PoolState,
    Signal,
)
from pdscale.controller.runtime.record import Outcome, PoolOutcome
from pdscale.forecasting.base import Forecaster
from pdscale.forecasting.seasonal import SeasonalHistory

__all__ = [
    "MAX_UNSAVED",
    "Backoff",
    "LiveSettings",
    "NoIntent",
    "SeasonalBook",
    "acting_pools",
    "decode_drivers",
    "feed_forecaster",
    "inputs_summary",
    "unwritable",
]


@dataclass(slots=True)
class Backoff:
    """Exponential backoff per pool after actuation failures, in seconds of the loop's clock."""

    base_s: float = 10.0
    max_s: float = 600.0
    failures: dict[str, int] = field(default_factory=dict)
    retry_at_s: dict[str, float] = field(default_factory=dict)

    def blocked(self, pool: str, now: float) -> bool:
        """Whether ``pool`` is still waiting out a backoff."""
        return now < self.retry_at_s.get(pool, -math.inf)

    def failed(self, pool: str, now: float, error_class: ErrorClass) -> float:
        """Record a failure; returns the delay before the next attempt."""
        n = self.failures.get(pool, 0) + 1
        self.failures[pool] = n
        delay = self.max_s if error_class is ErrorClass.PERMANENT else min(self.max_s, self.base_s * 2 ** (n - 1))
        self.retry_at_s[pool] = now + delay
        return delay

    def succeeded(self, pool: str) -> None:
        """Clear a pool's backoff."""
        self.failures.pop(pool, None)
        self.retry_at_s.pop(pool, None)


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """What an operator (admin API, SIGHUP reload) may change while the loop runs, copied at once: one tick
    decides on one such copy, so a change made during a tick takes effect, whole, at the next one (and never waits
    for the tick to end)."""

    policy: Policy
    policy_params: Mapping[str, Any]
    policy_state: Mapping[str, Any]
    slo: SLO
    budget_gpus: int | None
    guard_settings: GuardSettings
    overrides: Mapping[str, Override]
    paused: frozenset[str]


def decode_drivers(o: PoolObservation) -> tuple[float | None, float | None]:
    """Request rate and mean decode duration (output tokens x mean ITL) for a Little's-law forecaster."""
    if o.state is not DataState.OK:
        return None, None
    s = o.signals
    decode_s = s.osl_mean_tokens * s.itl_mean_ms / 1e3 if s.osl_mean_tokens and s.itl_mean_ms else None
    return s.request_rate_per_s, decode_s


def feed_forecaster(
    fc: Forecaster, sig: Signal, o: PoolObservation, t: float, value: float | None, hist: SeasonalHistory | None
) -> None:
    """One tick's value of a signal into its forecaster (with the Little's-law drivers for decode concurrency)
    and into its seasonal history."""
    drivers = getattr(fc, "observe_drivers", None)
    if drivers is not None and sig is Signal.DECODE_CONCURRENCY:
        drivers(t, *decode_drivers(o))
    fc.observe(t, value)
    if hist is not None:
        hist.observe(t, value)


class SeasonalBook:
    """Each forecast signal's seasonal history (``forecasting.seasonal``): what the forecasters were fed over the
    last week and a day, plus any start-up backfill; the policy reads it as ``PolicyContext.seasonal``."""

    def __init__(self, keys: list[tuple[str, Signal]], tick_s: float) -> None:
        self.histories = {k: SeasonalHistory(bin_s=max(60.0, tick_s)) for k in keys}

    def get(self, pool: str, sig: Signal) -> SeasonalHistory | None:
        """The history of one pool's signal (None when it is not forecast)."""
        return self.histories.get((pool, sig))

    def backfill(self, pool: str, sig: Signal, times_s: list[float], values: list[float | None]) -> int:
        """Past values of a pool's signal (a range query at start-up, a scenario's ``history``); returns how many
        were finite (0 when the signal is not forecast)."""
        hist = self.histories.get((pool, sig))
        return hist.backfill(times_s, values) if hist is not None else 0

    def views(self) -> dict[str, dict[Signal, SeasonalHistory]]:
        """Per pool, per signal, for the policy context."""
        out: dict[str, dict[Signal, SeasonalHistory]] = {}
        for (pool, sig), hist in self.histories.items():
            out.setdefault(pool, {})[sig] = hist
        return out


def inputs_summary(
    observations: Mapping[str, PoolObservation],
    states: Mapping[str, PoolState],
    forecasts: Mapping[str, Mapping[Signal, Forecast]],
) -> dict[str, Any]:
    return {
        "observations": {
            p: {
                "state": o.state.value,
                "reason": o.reason,
                "sample_time_s": o.sample_time_s,
                "signals": {k: v for k, v in o.signals.as_dict().items() if v is not None},
            }
            for p, o in observations.items()
        },
        "states": {
            p: {"target": s.target, "ready": s.ready, "starting": s.starting, "draining": s.draining}
            for p, s in states.items()
        },
        "forecasts": {
            p: {
                sig.value: {
                    "mean": f.mean,
                    "quantiles": {str(q): v for q, v in f.quantiles.items()},
                    "ready": f.ready,
                    "model": f.model,
                    **({"note": f.note} if f.note else {}),
                }
                for sig, f in fs.items()
            }
            for p, fs in forecasts.items()
        },
    }


MAX_UNSAVED = 1000
"""Decisions kept in memory while the store cannot be written (oldest dropped beyond)."""


class NoIntent(Exception):  # noqa: N818 - internal signal, not an error shown to anyone
    """The intent could not be persisted: the call is not made."""


def unwritable(pools: list[str]) -> dict[str, PoolOutcome]:
    detail = "state store unwritable: no call without its recorded decision"
    return {p: PoolOutcome(Outcome.FAILED, detail, ErrorClass.TRANSIENT.value) for p in pools}


def acting_pools(decision: Decision, states: Mapping[str, PoolState], dry_run: bool) -> list[str]:
    """Pools this decision will call the actuator for (flips included)."""
    if decision.held or dry_run:
        return []
    pools = {p for f in decision.flips for p in (f.from_pool, f.to_pool)}
    pools |= {d.pool for d in decision.pools.values() if d.target != states[d.pool].target}
    return sorted(pools)
