"""``reactive``: the Kubernetes HPA on utilisation and queue length, per pool, no forecast, no capacity model.

Per pool: ``ratio = max(utilisation / target_utilization, waiting per replica / queue_per_replica)``;
inside the tolerance band (``|ratio - 1| <= tolerance``) the pool holds, otherwise
``desired = ceil(ready x ratio)``. Stabilisation windows (seconds, kept in the policy state) make a scale-down
go only to the highest desired count of the last ``scale_down_window_s`` and a scale-up only to the lowest of
the last ``scale_up_window_s``. Utilisation is each pool's own compute-busy share: ``prefill_utilization`` for
prefill, ``decode_utilization`` for decode (the busy share of its step loop, not the KV share: an ITL-bound
decode batch keeps its KV mostly empty), the larger of the two for colocated pools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import DataState, PoolRole, Signals
from pdscale.controller.policies.hpa import stabilised
from pdscale.controller.policies.params import Param, validate_params

__all__ = ["ReactivePolicy"]

PARAMS: Mapping[str, Param] = {
    "target_utilization": Param(float, 0.7, lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "queue_per_replica": Param(float, 4.0, lambda v: v > 0, "must be > 0"),
    "tolerance": Param(float, 0.1, lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "scale_up_window_s": Param(float, 0.0, lambda v: v >= 0, "must be >= 0"),
    "scale_down_window_s": Param(float, 300.0, lambda v: v >= 0, "must be >= 0"),
}


def _utilization(role: PoolRole, s: Signals) -> float | None:
    if role is PoolRole.PREFILL:
        values = [s.prefill_utilization]
    elif role is PoolRole.DECODE:
        values = [s.decode_utilization]
    else:
        values = [s.prefill_utilization, s.decode_utilization]
    known = [v for v in values if v is not None]
    return max(known) if known else None


class ReactivePolicy:
    """HPA-style proportional scaling with a tolerance band and stabilisation windows in seconds."""

    name = "reactive"
    uses_forecasts = False
    """Reads no forecast: the bench runs it with the cheapest forecaster (same decisions, faster)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = validate_params("reactive", params, PARAMS)

    def _desired(self, ctx: PolicyContext, name: str) -> tuple[int | None, str]:
        obs = ctx.observations.get(name)
        st = ctx.states[name]
        if obs is None or obs.state is not DataState.OK:
            return None, f"hold: metrics {obs.state.value if obs else 'missing'}"
        s = obs.signals
        util = _utilization(ctx.pools[name].role, s)
        ratios: list[tuple[float, str]] = []
        if util is not None:
            ratios.append((util / self.params["target_utilization"], f"utilisation {util:.2f}"))
        if s.waiting_requests is not None:
            per = s.waiting_requests / max(1, st.ready)
            ratios.append((per / self.params["queue_per_replica"], f"{per:.1f} waiting/replica"))
        if not ratios:
            return None, "hold: no utilisation or queue metric"
        ratio, what = max(ratios)
        if abs(ratio - 1.0) <= self.params["tolerance"]:
            return st.target, f"{what}: within tolerance"
        base = st.ready if st.ready > 0 else st.target
        if base == 0:
            return (1 if ratio > 0 else 0), f"{what}: from zero"
        return math.ceil(base * ratio - 1e-9), f"{what}: ceil({base} x {ratio:.2f})"

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Desired replicas per pool from current utilisation and queues."""
        targets, reasons, history = stabilised(
            ctx,
            lambda name: self._desired(ctx, name),
            down_window_s=self.params["scale_down_window_s"],
            up_window_s=self.params["scale_up_window_s"],
        )
        return Proposal(targets=targets, reasons=reasons, state={"desired": history})
