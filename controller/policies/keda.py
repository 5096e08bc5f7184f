"""``keda``: llm-d's per-role KEDA recipe, one scaler per role, on the signals each role's engine exports.

- **Prefill** scales on queued prompt tokens (``waiting_requests x isl_mean_tokens``; vLLM exports the queue
  length and the prompt-length histogram) against ``target = prefill tokens/s per replica x prefill_queue_s``,
  the prompt tokens one replica clears in ``prefill_queue_s``. A KEDA Prometheus trigger with an
  ``AverageValue`` target makes the HPA compute ``desired = ceil(metric / target)``.
- **Decode** scales on KV-cache occupancy (``kv_usage_ratio``, the replicas' average) against ``kv_threshold``:
  ``desired = ceil(ready x occupancy / kv_threshold)``. The threshold is calibrated like the prefill target: the
  occupancy of one replica at the largest batch that meets the ITL target (the capacity model's ITL-bound
  batch x the KV a mean sequence holds), since a fixed 0.7 would let an ITL-bound pool shrink until its
  batch breaks the ITL target long before its KV fills. ``kv_threshold`` set in the params overrides it.
- Both with the HPA's defaults: no change while ``|ratio - 1| <= tolerance`` (0.1, kube-controller-manager's
  ``--horizontal-pod-autoscaler-tolerance``) and a scale-down only to the highest desired count of the last
  ``scale_down_window_s`` (300 s, ``behavior.scaleDown.stabilizationWindowSeconds``); scale-up is immediate.

The prefill tokens/s per replica is calibrated from the same capacity model ``slo`` is given (its throughput
at the observed prompt length, the engine's token budget), or set with ``prefill_tps_per_replica``: the peer
gets the same knowledge of the hardware as pdscale's policy. It reads no forecast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import DataState, PoolRole
from pdscale.controller.policies.demand import workload_from
from pdscale.controller.policies.hpa import stabilised
from pdscale.controller.policies.params import Param, validate_params

__all__ = ["KedaPolicy"]

PARAMS: Mapping[str, Param] = {
    "prefill_queue_s": Param(float, 2.0, lambda v: v > 0, "must be > 0"),
    "kv_threshold": Param(float, 0.0, lambda v: 0 <= v <= 1, "must be in [0, 1] (0: calibrated)"),
    "tolerance": Param(float, 0.1, lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "scale_down_window_s": Param(float, 300.0, lambda v: v >= 0, "must be >= 0"),
    "prefill_tps_per_replica": Param(float, 0.0, lambda v: v >= 0, "must be >= 0 (0: from the capacity model)"),
}


class KedaPolicy:
    """One HPA-style scaler per role: prefill on queued prompt tokens, decode on KV occupancy."""

    name = "keda"
    uses_forecasts = False
    """Reads no forecast: the bench runs it with the cheapest forecaster (same decisions, faster)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = validate_params("keda", params, PARAMS)
        self.defaults = Workload(isl_mean_tokens=1024.0, osl_mean_tokens=256.0)

    def _prefill_target(self, ctx: PolicyContext, w: Workload) -> float | None:
        tps = self.params["prefill_tps_per_replica"]
        if not tps and ctx.capacity is not None:
            tps = ctx.capacity.prefill_throughput_tps(w.isl_mean_tokens)
        return tps * self.params["prefill_queue_s"] if tps else None

    def _kv_threshold(self, ctx: PolicyContext, w: Workload) -> float:
        fixed = self.params["kv_threshold"]
        if fixed or ctx.capacity is None:
            return fixed or 0.7
        batch = ctx.capacity.decode_batch(ctx.slo.itl_ms, w)
        per_seq = w.isl_mean_tokens + w.osl_mean_tokens / 2.0
        share = batch * per_seq / max(1.0, float(ctx.capacity.profile.max_kv_tokens))
        return min(0.95, max(0.01, share))

    def _desired(self, ctx: PolicyContext, name: str, w: Workload) -> tuple[int | None, str]:
        obs = ctx.observations.get(name)
        st = ctx.states[name]
        if obs is None or obs.state is not DataState.OK:
            return None, f"hold: metrics {obs.state.value if obs else 'missing'}"
        s = obs.signals
        role = ctx.pools[name].role
        if role is PoolRole.DECODE:
            if s.kv_usage_ratio is None:
                return None, "hold: no KV occupancy metric"
            base = st.ready if st.ready > 0 else st.target
            threshold = self._kv_threshold(ctx, w)
            ratio = s.kv_usage_ratio / threshold
            what = f"KV occupancy {s.kv_usage_ratio:.2f} vs {threshold:.2f}"
            if abs(ratio - 1.0) <= self.params["tolerance"]:
                return st.target, f"{what}: within tolerance"
            return max(1, math.ceil(base * ratio - 1e-9)), f"{what}: ceil({base} x {ratio:.2f})"
        target = self._prefill_target(ctx, w)
        if target is None:
            return None, "hold: no prefill tokens/s per replica (no capacity model, no prefill_tps_per_replica)"
        if s.waiting_requests is None:
            return None, "hold: no queue-length metric"
        queued = s.waiting_requests * (s.isl_mean_tokens or w.isl_mean_tokens)
        current = max(1, st.ready)
        ratio = queued / (current * target)
        what = f"{queued:,.0f} queued prompt tokens vs {target:,.0f}/replica"
        if abs(ratio - 1.0) <= self.params["tolerance"]:
            return st.target, f"{what}: within tolerance"
        return math.ceil(queued / target - 1e-9), f"{what}: ceil({queued:,.0f} / {target:,.0f})"

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Desired replicas per pool from its role's KEDA trigger, HPA tolerance and stabilisation."""
        w = workload_from(ctx, ctx.state.get("workload", {}), self.defaults)
        targets, reasons, history = stabilised(
            ctx,
            lambda name: self._desired(ctx, name, w),
            down_window_s=self.params["scale_down_window_s"],
            down_label="scale-down stabilisation",
        )
        state = {
            "desired": history,
            "workload": {"isl_mean_tokens": w.isl_mean_tokens, "osl_mean_tokens": w.osl_mean_tokens},
        }
        return Proposal(targets=targets, reasons=reasons, state=state)
