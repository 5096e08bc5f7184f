"""``dynamo-like``: NVIDIA Dynamo's SLA planner rule, as published, on pdscale's profile and forecasts.

Every ``adjustment_interval_s`` (180 s by default) the planner predicts the next interval's request count, ISL
and OSL (here: the forecasts' means, Dynamo's constant/ARIMA predictors play the same role), then:

- prefill: ``ceil(num_req x ISL / interval x min(1, p_corr) / prefill_tps_per_engine(ISL))``, where the
  per-engine prefill throughput is ``ISL / TTFT(ISL)`` of one prompt from the profile and ``p_corr`` is observed
  TTFT over the profile's TTFT for the observed ISL;
- decode: ``ceil(num_req x OSL / interval / decode_tps_per_engine(ITL / d_corr, ISL + OSL/2))``, the best
  per-engine decode throughput whose step time meets the corrected ITL, ``d_corr`` being observed ITL over the
  profile's step time at the observed batch.
Between adjustments the targets hold. Colocated pools get the larger of the two counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.protocols import CapacityModel, PolicyContext, Proposal
from pdscale.controller.core.types import DataState, PoolRole, Signal
from pdscale.controller.policies.demand import workload_from
from pdscale.controller.policies.params import Param, validate_params

__all__ = ["DynamoLikePolicy"]

PARAMS: Mapping[str, Param] = {
    "adjustment_interval_s": Param(float, 180.0, lambda v: v > 0, "must be > 0"),
    "correction": Param(bool, True),
    "isl_tokens": Param(float, 1024.0, lambda v: v > 0, "must be > 0"),
    "osl_tokens": Param(float, 256.0, lambda v: v > 0, "must be > 0"),
}


class DynamoLikePolicy:
    """Dynamo SLA planner's throughput-based rule at a fixed adjustment interval."""

    name = "dynamo-like"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = validate_params("dynamo-like", params, PARAMS)
        self.defaults = Workload(self.params["isl_tokens"], self.params["osl_tokens"])

    def _rate(self, ctx: PolicyContext) -> float | None:
        """Predicted requests/s: the forecast mean of any pool's request rate, else the observed one."""
        for name in ctx.pools:
            fc = ctx.forecasts.get(name, {}).get(Signal.REQUEST_RATE)
            if fc is not None:
                return max(0.0, fc.mean)
        for name in ctx.pools:
            obs = ctx.observations.get(name)
            if obs is not None and obs.state is DataState.OK and obs.signals.request_rate_per_s is not None:
                return obs.signals.request_rate_per_s
        return None

    def _corrections(self, ctx: PolicyContext, model: CapacityModel, w: Workload) -> tuple[float, float]:
        p_corr = d_corr = 1.0
        if not self.params["correction"]:
            return p_corr, d_corr
        for name, spec in ctx.pools.items():
            obs = ctx.observations.get(name)
            ready = ctx.states[name].ready
            if obs is None or obs.state is not DataState.OK or ready < 1:
                continue
            s = obs.signals
            ttft = s.ttft_p50_ms or s.ttft_p99_ms
            if spec.role is not PoolRole.DECODE and ttft:
                p_corr = ttft / max(1e-9, model.profile.prefill_ms(w.isl_mean_tokens, 1.0))
            itl = s.itl_p50_ms or s.itl_p99_ms
            if spec.role is not PoolRole.PREFILL and itl and s.running_requests:
                d_corr = itl / max(1e-9, model.predict_itl_ms(ready, s.running_requests, w))
        return p_corr, max(d_corr, 1e-3)

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Recompute the targets once per adjustment interval; hold in between."""
        current = {n: ctx.states[n].target for n in ctx.pools}
        state = dict(ctx.state)
        interval = self.params["adjustment_interval_s"]
        last = state.get("last_adjust_s")
        if isinstance(last, (int, float)) and ctx.now_s - float(last) < interval:
            why = f"hold: next adjustment at {float(last) + interval:.0f} s"
            return Proposal(targets=state.get("targets", current), reasons=dict.fromkeys(current, why), state=state)
        model = ctx.capacity
        if model is None:
            why = "hold: dynamo-like needs a profile capacity model (capacity.profile)"
            return Proposal(targets=current, reasons=dict.fromkeys(current, why), state=state)
        rate = self._rate(ctx)
        if rate is None:
            why = "hold: no request-rate forecast or metric"
            return Proposal(targets=current, reasons=dict.fromkeys(current, why), state=state)
        w = workload_from(ctx, state.get("workload", {}), self.defaults)
        p_corr, d_corr = self._corrections(ctx, model, w)
        num_req = rate * interval
        isl, osl = w.isl_mean_tokens, w.osl_mean_tokens
        prefill_tps = num_req * isl / interval * min(1.0, p_corr)
        per_engine_p = isl / (model.profile.prefill_ms(isl, 1.0) / 1e3)
        n_p = math.ceil(prefill_tps / per_engine_p - 1e-9)
        # decode_throughput_tps sizes within itl x itl_headroom; Dynamo uses the corrected ITL itself.
        itl = ctx.slo.itl_ms / d_corr / model.params.itl_headroom
        per_engine_d = model.decode_throughput_tps(itl, w)
        decode_tps = num_req * osl / interval
        n_d = math.ceil(decode_tps / per_engine_d - 1e-9) if per_engine_d > 0 else max(current.values())
        targets: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for name, spec in ctx.pools.items():
            if spec.role is PoolRole.PREFILL:
                targets[name] = n_p
                reasons[name] = (
                    f"{prefill_tps:.0f} prompt tok/s/{per_engine_p:.0f} per engine, ISL {isl:.0f}, p_corr {p_corr:.2f}"
                )
            elif spec.role is PoolRole.DECODE:
                targets[name] = n_d
                reasons[name] = (
                    f"{decode_tps:.0f} output tok/s/{per_engine_d:.0f} per engine, ITL {itl:.0f}, d_corr {d_corr:.2f}"
                )
            else:
                targets[name] = max(n_p, n_d)
                reasons[name] = f"colocated: max(prefill {n_p}, decode {n_d})"
        state.update(
            last_adjust_s=ctx.now_s,
            targets=targets,
            workload={"isl_mean_tokens": isl, "isl_p90_tokens": w.isl_p90_tokens, "osl_mean_tokens": osl},
        )
        return Proposal(targets=targets, reasons=reasons, state=state)
