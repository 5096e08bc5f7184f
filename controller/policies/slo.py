"""``slo`` (the default policy): size prefill and decode jointly for their SLOs from quantile forecasts.

Each tick, per pool:
1. demand = the forecast quantile at the pool's lead time (cold start + tick), never below what is observed
   now, times ``headroom``. The quantile is per role: ``prefill_forecast_quantile`` (default 0.5: the
   queueing model sizes for the variability around it), ``decode_forecast_quantile`` and
   ``colocated_forecast_quantile`` (default 0.9: a decode pool past its ITL-bound batch misses the ITL of every
   sequence it holds);
2. replicas = the capacity model's answer for that demand and the request shape (ISL/OSL from the metrics),
   with the online calibration factors applied and the arrival variability *measured*: the index of
   dispersion of per-tick request counts (``policies.dispersion``) is the queueing model's ca^2, so clumped or
   bursty traffic gets the servers its queue needs and Poisson traffic does not pay for bursts it lacks;
3. scale-down: the guards' stabilisation window (``guards.scale_down_window_s``, 300 s) lowers a target only
   when every need of the window fits in fewer replicas (the forecast says N-1 hold the SLO with the load
   consolidated); ``scale_down_window_s`` here adds a policy-level window on top (default 0: one window, not
   two stacked);
4. under a binding GPU budget, the split that maximises the worst pool's share of its need; the capacity moves
   by role flips when the actuator supports them;
5. seasonal floor (``seasonal_floor``, on): each demand signal is raised to what the same clock time one day and
   one week earlier held at the lead time, scaled by how much of that history's recent load came back today
   (``policies.seasonal``, ``forecasting.seasonal``): a gap is not taken for the new normal, and a return is
   pre-scaled one cold start ahead;
6. optional SLO feedback (``slo_feedback``, off by default): a demand margin that steps up when a pool's
   observed p99 misses its target and decays back (``policies.feedback``);
7. low-count arrivals (``pool_low_counts``, on): a prefill pool with under 100 arrivals a tick is sized on its
   rate pooled over the newest ticks that hold 100, unless the newest departs by 3 sigma (``policies.count_noise``).
The proposal counts starting replicas as capacity (``Proposal.counts_starting``). Without a capacity model, or
without any demand data, the policy holds and says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pdscale.controller.core.calibration import CalibrationSettings, CalibrationState, has_calibration_sink, update
from pdscale.controller.core.capacity import Correction, Workload
from pdscale.controller.core.prefill_shape import PrefillShape, PrefillShapeSettings
from pdscale.controller.core.protocols import CapacityEstimate, CapacityModel, PolicyContext, Proposal
from pdscale.controller.core.shape import DecodeShape, ShapeSettings
from pdscale.controller.core.types import DataState, PoolRole, PoolSpec, RoleFlip, Signal, Signals
from pdscale.controller.policies.backlog import decode_backlog, prefill_backlog, upstream_rate
from pdscale.controller.policies.count_noise import pooled_rate, with_pooled
from pdscale.controller.policies.demand import pool_demand, split_budget, workload_from
from pdscale.controller.policies.dispersion import Dispersion
from pdscale.controller.policies.feasibility import TtftFeasibility, ttft_feasibility
from pdscale.controller.policies.feedback import Margin, update_margin
from pdscale.controller.policies.params import Param, validate_params
from pdscale.controller.policies.prefill_shaping import observe_prefill_shape, prefix_reuse, shaped_prefill
from pdscale.controller.policies.seasonal import raise_to_floor
from pdscale.forecasting.seasonal import FloorSettings

__all__ = ["SloPolicy"]

PARAMS: Mapping[str, Param] = {
    "colocated_forecast_quantile": Param(float, 0.9, lambda v: 0.5 <= v < 1.0, "must be in [0.5, 1)"),
    "prefill_forecast_quantile": Param(float, 0.5, lambda v: 0.5 <= v < 1.0, "must be in [0.5, 1)"),
    "decode_forecast_quantile": Param(float, 0.9, lambda v: 0.5 <= v < 1.0, "must be in [0.5, 1)"),
    "headroom": Param(float, 1.0, lambda v: 1.0 <= v <= 3.0, "must be in [1, 3]"),
    "scale_down_window_s": Param(float, 0.0, lambda v: v >= 0, "must be >= 0"),
    "calibrate": Param(bool, True),
    "calibration_alpha": Param(float, 0.2, lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "calibration_min": Param(float, 0.5, lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "calibration_max": Param(float, 2.0, lambda v: v >= 1, "must be >= 1"),
    "profile_off_threshold": Param(float, 0.3, lambda v: v > 0, "must be > 0"),
    "role_flips": Param(bool, True),
    "learn_decode_shape": Param(bool, True),
    "learn_prefill_shape": Param(bool, True),
    "shape_half_life_s": Param(float, 6 * 3600.0, lambda v: v > 0, "must be > 0"),
    "measure_arrival_cv2": Param(bool, True),
    "dispersion_half_life_s": Param(float, 1800.0, lambda v: v > 0, "must be > 0"),
    "seasonal_floor": Param(bool, True),
    "pool_low_counts": Param(bool, True),
    "seasonal_window_s": Param(float, 1800.0, lambda v: v > 0, "must be > 0"),
    "seasonal_max_ratio": Param(float, 1.0, lambda v: 0 < v <= 2, "must be in (0, 2]"),
    "slo_feedback": Param(bool, False),
    "feedback_step": Param(float, 0.15, lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "feedback_half_life_s": Param(float, 1800.0, lambda v: v > 0, "must be > 0"),
    "feedback_max": Param(float, 2.0, lambda v: v >= 1, "must be >= 1"),
    "isl_tokens": Param(float, 1024.0, lambda v: v > 0, "must be > 0"),
    "osl_tokens": Param(float, 256.0, lambda v: v > 0, "must be > 0"),
}


class SloPolicy:
    """Joint prefill/decode sizing against the TTFT and ITL targets (see the module docstring for parameters)."""

    name = "slo"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = validate_params("slo", params, PARAMS)
        self.calibration = CalibrationSettings(
            alpha=self.params["calibration_alpha"],
            min_factor=self.params["calibration_min"],
            max_factor=self.params["calibration_max"],
            off_threshold=self.params["profile_off_threshold"],
        )
        self.defaults = Workload(self.params["isl_tokens"], self.params["osl_tokens"])
        self.floor = FloorSettings(
            window_s=self.params["seasonal_window_s"], max_ratio=self.params["seasonal_max_ratio"]
        )
        self.shape_settings = ShapeSettings(
            half_life_s=self.params["shape_half_life_s"],
            min_factor=self.params["calibration_min"],
            max_factor=self.params["calibration_max"],
        )
        self.prefill_shape_settings = PrefillShapeSettings(
            half_life_s=self.params["shape_half_life_s"],
            min_factor=self.params["calibration_min"],
            max_factor=self.params["calibration_max"],
        )

    # -- calibration ----------------------------------------------------------------------------------
    def _calibrate(
        self, ctx: PolicyContext, model: CapacityModel, w: Workload, cal: CalibrationState, feas: TtftFeasibility
    ) -> tuple[CalibrationState, list[tuple[float, float]]]:
        """Move the correction factors toward observed / predicted at the observed load; also return this tick's
        decode points ``(batch, observed / profile step)`` for the shape fit (``core.shape``).

        The comparisons use exact interval statistics, never bucket-interpolated quantiles (a histogram with
        vLLM's 25/50/75 ms ITL buckets cannot tell 40 ms from 45 ms):
        - decode: the token-weighted mean ITL (histogram sum / count) against the profile's step time at the
          mean batch, which Little's law gives exactly: generated tokens/s x mean ITL = mean running sequences;
        - prefill: the measured compute-busy share against rate / (replicas x service rate) where the source
          reports it, else the mean TTFT against the M/G/c mean, only while the pool is not under-sized.
        A TTFT miss that prompts no fleet can serve explain (``feas.tail_unattainable``) does not hold the
        prefill factor up.
        """
        if not self.params["calibrate"]:
            return cal, []
        prefill_ratio = decode_ratio = None
        points: list[tuple[float, float]] = []
        ttft_violated = itl_violated = False
        for name, spec in ctx.pools.items():
            obs = ctx.observations.get(name)
            st = ctx.states[name]
            if obs is None or obs.state is not DataState.OK or st.ready < 1:
                continue
            s = obs.signals
            ttft_violated |= (s.ttft_p99_ms or 0.0) > ctx.slo.ttft_ms and not feas.tail_unattainable
            itl_violated |= (s.itl_p99_ms or 0.0) > ctx.slo.itl_ms
            if spec.role is PoolRole.PREFILL and s.request_rate_per_s:
                prefill_ratio = _prefill_ratio(ctx, model, spec, st.ready, s, w) or prefill_ratio
            # Colocated steps mix prefill chunks into decode steps: the ITL cannot be split between the two
            # phases from engine metrics, so only decode pools calibrate the decode factor.
            if spec.role is PoolRole.DECODE and st.draining == 0 and s.itl_mean_ms and s.generation_tokens_per_s:
                batch = s.generation_tokens_per_s * s.itl_mean_ms / 1e3 / st.ready
                predicted = model.predict_itl_ms(1, batch, w)
                if predicted > 0:
                    decode_ratio = s.itl_mean_ms / predicted
                    points.append((batch, decode_ratio))
        new, report = update(
            cal,
            self.calibration,
            prefill_ratio=prefill_ratio,
            decode_ratio=decode_ratio,
            ttft_violated=ttft_violated,
            itl_violated=itl_violated,
        )
        if new.profile_off != cal.profile_off and has_calibration_sink(ctx.capacity):
            ctx.capacity.calibration_report(report, new)
        return new, points

    # -- the decision ---------------------------------------------------------------------------------
    def decide(self, ctx: PolicyContext) -> Proposal:
        """Targets for every pool; holds with a reason when it cannot size."""
        current = {n: ctx.states[n].target for n in ctx.pools}
        if ctx.capacity is None:
            why = "hold: no capacity model (set capacity.profile in the settings)"
            return Proposal(targets=current, reasons=dict.fromkeys(current, why), state=ctx.state)
        state = dict(ctx.state)
        w = workload_from(ctx, state.get("workload", {}), self.defaults)
        dispersion = self._dispersion(ctx, Dispersion.from_dict(state.get("dispersion")))
        idc = dispersion.index() if self.params["measure_arrival_cv2"] else None
        if idc is not None:
            w = replace(w, arrival_cv2=idc)
        cal = CalibrationState.from_dict(state.get("calibration"))
        model = ctx.capacity
        feas = ttft_feasibility(model, w, ctx.slo, cal.correction())
        cal, points = self._calibrate(ctx, model, w, cal, feas)
        shape = DecodeShape.from_dict(state.get("decode_shape"))
        if self.params["learn_decode_shape"]:
            for batch, ratio in points:
                shape = shape.observe(ctx.now_s, batch, ratio, self.shape_settings)
        pshape = PrefillShape.from_dict(state.get("prefill_shape"))
        if self.params["learn_prefill_shape"]:
            pshape = observe_prefill_shape(ctx, model, w, pshape, self.prefill_shape_settings)
        headroom = self.params["headroom"]

        margins = self._margins(ctx, state.get("margins", {}), feas)
        needs: dict[str, int] = {}
        estimates: dict[str, dict[str, float]] = {}
        reasons: dict[str, str] = {}
        counts: dict[str, list[list[float]]] = {}
        for name, spec in ctx.pools.items():
            q = self.params[f"{spec.role.value}_forecast_quantile"]
            demand = pool_demand(ctx, name, q)
            if not demand:
                needs[name] = current[name]
                reasons[name] = "hold: no forecast and no current metrics for this pool"
                continue
            wl, pooled = w, None
            if spec.role is PoolRole.PREFILL and self.params["pool_low_counts"]:
                pooled, counts[name] = pooled_rate(ctx, name, state.get("counts", {}).get(name))
                if pooled is not None:
                    demand, wl = with_pooled(demand, w, pooled)
            floor = raise_to_floor(ctx, name, demand, self.floor) if self.params["seasonal_floor"] else None
            demand = floor.demand if floor is not None else demand
            margin = margins[name].factor
            demand = {s: v * headroom * margin for s, v in demand.items()}
            corr, shape_note, shape_est = cal.correction(), "", {}
            if spec.role is PoolRole.DECODE and self.params["learn_decode_shape"]:
                corr, shape_note = self._shaped(model, w, ctx, corr, shape)
                shape_est = {"decode_shape_factor": corr.decode} if shape_note else {}
            if spec.role is PoolRole.PREFILL and self.params["learn_prefill_shape"]:
                corr, shape_note, shape_est = shaped_prefill(model, wl, corr, pshape, self.prefill_shape_settings)
            if spec.role is PoolRole.PREFILL and w.prefix_cached_share > 0.0:
                reuse_note, reuse_est = prefix_reuse(w)
                shape_note = "; ".join(n for n in (reuse_note, shape_note) if n)
                shape_est = {**shape_est, **reuse_est}
            backlog_note = ""
            if spec.role is PoolRole.DECODE:
                up = upstream_rate(ctx, name, model, w, cal.correction())
                vouched = self._step_vouched(model, w, ctx, corr, shape)
                demand, backlog_note = decode_backlog(ctx, name, model, w, corr, demand, up, vouched)
            elif spec.role is PoolRole.PREFILL:
                demand, backlog_note = prefill_backlog(ctx, name, model, wl, corr, demand)
            est = model.replicas_needed(spec, demand, ctx.slo, workload=wl, correction=corr)
            needs[name] = est.replicas
            reasons[name] = f"need {est.replicas} at forecast p{q * 100:g}: {est.reason}"
            estimates[name] = _estimate_dict(est, demand, cal)
            estimates[name]["slo_margin"] = margin
            estimates[name]["forecast_quantile"] = q  # the log's forecast= is read at this quantile
            if pooled is not None:
                reasons[name] += f"; {pooled.note()}"
                estimates[name]["pooled_ticks"] = float(pooled.ticks)
            if floor is not None:
                estimates[name].update(floor.estimates)
                reasons[name] += f"; {floor.note}" if floor.note else ""
            if w.arrival_cv2 is not None:
                estimates[name]["arrival_cv2"] = w.arrival_cv2
            if margin > 1.0:
                reasons[name] += f"; SLO feedback margin x{margin:.2f}"
            if backlog_note:
                reasons[name] += f"; {backlog_note}"
            if shape_note:
                reasons[name] += f"; {shape_note}"
                estimates[name].update(shape_est)
            if feas.tail_unattainable and spec.role is not PoolRole.DECODE:
                reasons[name] += f"; {feas.note(ctx.slo.ttft_ms)}"
                estimates[name]["ttft_infeasible_share"] = feas.infeasible_share
            if cal.profile_off:
                reasons[name] += f"; calibration: profile off (prefill x{cal.prefill:.2f}, decode x{cal.decode:.2f})"

        targets, history = self._sustained(ctx, needs, current, reasons, state.get("needs", {}))
        flips: tuple[RoleFlip, ...] = ()
        if ctx.budget_gpus is not None:
            cost = sum(targets[n] * ctx.pools[n].gpus_per_replica for n in targets)
            if cost > ctx.budget_gpus:
                split = split_budget(needs, ctx.pools, ctx.budget_gpus)
                for n in targets:
                    if split[n] != targets[n]:
                        reasons[n] += f"; budget {ctx.budget_gpus} GPUs binds: {split[n]} of {needs[n]} needed"
                targets = split
        if ctx.supports_role_flip and self.params["role_flips"]:
            flips = _flips(ctx, current, targets)
        state.update(
            workload={
                "isl_mean_tokens": w.isl_mean_tokens,
                "isl_p90_tokens": w.isl_p90_tokens,
                "isl_p99_tokens": w.isl_p99_tokens,
                "prefix_cached_share": w.prefix_cached_share,
                "osl_mean_tokens": w.osl_mean_tokens,
            },
            calibration=cal.to_dict(),
            needs=history,
            counts=counts,
            margins={n: m.to_dict() for n, m in margins.items()},
            decode_shape=shape.to_dict(),
            prefill_shape=pshape.to_dict(),
            dispersion=dispersion.to_dict(),
        )
        return Proposal(
            targets=targets, reasons=reasons, flips=flips, estimates=estimates, state=state, counts_starting=True
        )

    def _dispersion(self, ctx: PolicyContext, d: Dispersion) -> Dispersion:
        """Fold this tick's arrival rate (the first prefill or colocated pool with data) into the estimate."""
        for name, spec in ctx.pools.items():
            obs = ctx.observations.get(name)
            if spec.role is PoolRole.DECODE or obs is None or obs.state is not DataState.OK:
                continue
            return d.observe(
                ctx.now_s, obs.signals.request_rate_per_s, ctx.tick_s, self.params["dispersion_half_life_s"]
            )
        return d

    def _shaped(
        self, model: CapacityModel, w: Workload, ctx: PolicyContext, corr: Correction, shape: DecodeShape
    ) -> tuple[Correction, str]:
        """The decode correction at the batch the pool will be sized for, from the learned shape.

        The factor depends on the batch and the sizing batch on the factor: a few fixed-point steps from the scalar
        factor (the law is a power of the batch with a bounded exponent, so they settle at once).
        """
        if not shape.trusted(self.shape_settings):
            return corr, ""
        factor, last = corr.decode, None
        batch = 1
        for _ in range(8):
            batch = max(1, model.decode_batch(ctx.slo.itl_ms, w, replace(corr, decode=factor)))
            law = shape.factor(batch, self.shape_settings)
            if law is None or abs(law - factor) < 1e-3:
                break
            if last is not None and abs(law - last) < 1e-3:  # two integer batches alternate: take the slower
                factor = max(law, factor)
                batch = max(1, model.decode_batch(ctx.slo.itl_ms, w, replace(corr, decode=factor)))
                break
            last, factor = factor, law
        note = f"{shape.describe(self.shape_settings)}: x{factor:.2f} at the sizing batch {batch}"
        return replace(corr, decode=factor), note

    def _step_vouched(
        self, model: CapacityModel, w: Workload, ctx: PolicyContext, corr: Correction, shape: DecodeShape
    ) -> bool:
        """Whether the predicted step at the sizing batch rests on evidence: the decode factor is inside its bounds
        (a factor pinned at ``calibration_min``/``max`` only says "at least this far off") and, with a learned
        shape, the sizing batch is within 1.5x of the largest batch observed (no extrapolation far past it)."""
        if not self.calibration.min_factor * 1.02 < corr.decode < self.calibration.max_factor / 1.02:
            return False  # at (or within 2 % of) a bound: the factor has been pressed against it
        if not (self.params["learn_decode_shape"] and shape.trusted(self.shape_settings)) or shape.x_max is None:
            return True
        return model.decode_batch(ctx.slo.itl_ms, w, corr) <= 1.5 * math.exp(shape.x_max)

    def _margins(self, ctx: PolicyContext, past: Mapping[str, Any], feas: TtftFeasibility) -> dict[str, Margin]:
        """Each pool's SLO feedback margin after this tick's observed tail latency (see policies.feedback).

        A TTFT miss counts only while the TTFT quantile is attainable: when prompts whose prefill alone outlasts
        the target fill the SLO's tail (``policies.feasibility``), more replicas cannot fix it.
        """
        out: dict[str, Margin] = {}
        for name, spec in ctx.pools.items():
            m = Margin.from_dict(past.get(name) if isinstance(past, Mapping) else None)
            if not self.params["slo_feedback"]:
                out[name] = m
                continue
            obs = ctx.observations.get(name)
            violated: bool | None = None
            if obs is not None and obs.state is DataState.OK and ctx.states[name].ready >= 1:
                s = obs.signals
                ttft = s.ttft_p99_ms if spec.role is not PoolRole.DECODE and not feas.tail_unattainable else None
                itl = s.itl_p99_ms if spec.role is not PoolRole.PREFILL else None
                if ttft is not None or itl is not None:
                    violated = (ttft or 0.0) > ctx.slo.ttft_ms or (itl or 0.0) > ctx.slo.itl_ms
            out[name] = update_margin(
                m,
                now_s=ctx.now_s,
                violated=violated,
                step=self.params["feedback_step"],
                half_life_s=self.params["feedback_half_life_s"],
                max_factor=self.params["feedback_max"],
                lead_time_s=ctx.lead_time_s(name),
            )
        return out

    def _sustained(
        self,
        ctx: PolicyContext,
        needs: Mapping[str, int],
        current: Mapping[str, int],
        reasons: dict[str, str],
        past: Mapping[str, Any],
    ) -> tuple[dict[str, int], dict[str, list[list[float]]]]:
        window = self.params["scale_down_window_s"]
        targets: dict[str, int] = {}
        history: dict[str, list[list[float]]] = {}
        for name, need in needs.items():
            entries = [
                [float(t), float(v)]
                for t, v in (past.get(name) or [])
                if isinstance(t, (int, float)) and ctx.now_s - float(t) <= window + ctx.tick_s
            ]
            entries.append([ctx.now_s, float(need)])
            history[name] = entries
            if need >= current[name]:
                targets[name] = need
                continue
            covered = entries[0][0] <= ctx.now_s - window
            peak = int(max(v for t, v in entries if ctx.now_s - t <= window))
            if not covered or peak >= current[name]:
                targets[name] = current[name]
                reasons[name] += f"; hold: fewer replicas not yet sustained for {window:g} s"
            else:
                targets[name] = peak
                if window > 0:
                    reasons[name] += f"; {peak} hold the SLO over the last {window:g} s"
                else:
                    reasons[name] += f"; down to {peak} (no sustain window)"
        return targets, history


def _prefill_ratio(
    ctx: PolicyContext, model: CapacityModel, spec: PoolSpec, ready: int, s: Signals, w: Workload
) -> float | None:
    """Observed / predicted prefill cost at the observed load (None when there is nothing to compare)."""
    demand = {Signal.REQUEST_RATE: s.request_rate_per_s or 0.0}
    if s.prefill_utilization is not None:
        predicted = model.predict_prefill_busy_share(ready, demand, w)
        # A saturated pool's busy share says only "at least this slow": usable as a lower bound, not a ratio.
        if predicted > 0.0 and 0.05 <= s.prefill_utilization < 0.95:
            return s.prefill_utilization / predicted
        return None
    if s.ttft_mean_ms and ready >= model.replicas_needed(spec, demand, ctx.slo, workload=w).replicas:
        predicted = model.predict_ttft_mean_ms(ready, demand, w)
        if math.isfinite(predicted) and predicted > 0:
            return s.ttft_mean_ms / predicted
    return None


def _estimate_dict(est: CapacityEstimate, demand: Mapping[Signal, float], cal: CalibrationState) -> dict[str, float]:
    out: dict[str, float] = {"replicas": float(est.replicas)}
    for key, value in (
        ("predicted_ttft_ms", est.predicted_ttft_ms),
        ("predicted_itl_ms", est.predicted_itl_ms),
        ("utilization", est.utilization),
    ):
        if value is not None:
            out[key] = float(value)
    for sig, v in demand.items():
        out[f"demand_{sig.value}"] = float(v)
    out["calibration_prefill"] = cal.prefill
    out["calibration_decode"] = cal.decode
    out["profile_off"] = 1.0 if cal.profile_off else 0.0
    return out


def _flips(ctx: PolicyContext, current: Mapping[str, int], targets: Mapping[str, int]) -> tuple[RoleFlip, ...]:
    """Move replicas in place from shrinking to growing disaggregated pools of the same replica size."""
    flips: list[RoleFlip] = []
    shrink = {n: current[n] - targets[n] for n in targets if targets[n] < current[n]}
    grow = {n: targets[n] - current[n] for n in targets if targets[n] > current[n]}
    for src in sorted(shrink):
        for dst in sorted(grow):
            a, b = ctx.pools[src], ctx.pools[dst]
            if PoolRole.COLOCATED in (a.role, b.role) or a.gpus_per_replica != b.gpus_per_replica:
                continue
            count = min(shrink[src], grow[dst])
            if count >= 1:
                flips.append(RoleFlip(from_pool=src, to_pool=dst, count=count))
                shrink[src] -= count
                grow[dst] -= count
    return tuple(flips)
