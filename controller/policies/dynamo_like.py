"""``dynamo-like``: NVIDIA Dynamo's SLA planner (throughput-based scaling, Dynamo 1.6.1), on pdscale's profile.

What it follows (``components/src/dynamo/planner`` in ai-dynamo/dynamo: ``core/throughput_scaling.py``,
``core/perf_model/prefill.py`` and ``decode.py``, ``config/defaults.py``, ``core/budget.py``):

- **Demand is what arrives**: the frontend's request arrivals (``dynamo_frontend_requests_started_total``) and
  the mean ISL / OSL, summed over each ``adjustment_interval_s`` (180 s, Dynamo's
  ``throughput_adjustment_interval``).
- **Its own one-interval forecast** of request count, ISL and OSL: ``arima`` by default (Dynamo's
  ``load_predictor``; here an automatic choice among small ARIMA(p, d, 0) orders by AIC, see :func:`arima_next`),
  the ``constant`` predictor (next = last) while fewer than ``min_points`` intervals are known. It reads none of
  pdscale's forecasts.
- **Per-engine capacity search with the SLA checks**: prefill engine requests/s = 1 / wall time of one prompt of
  the predicted ISL (chunked by the engine's ``max_num_batched_tokens``); where that wall time exceeds the TTFT
  target it adds the latency floor ``ceil(TTFT / target)``. Decode: the largest batch, up to the KV cache's
  capacity at context ``ISL + OSL/2`` and ``max_num_seqs``, whose step time meets the ITL target (batch 1 where
  none does); engine requests/s = batch / (OSL x step time).
- ``replicas = max(ceil(demand rps / engine rps), floor, min_endpoint)``; each interval a pool moves at most
  ``max_change`` replicas (8, the bound Dynamo's budget fit assumes for its throughput deltas).
- **No correction factors**: Dynamo 0.7.0 scaled prefill by observed / profiled TTFT and the ITL target by
  observed / profiled ITL; 1.6.1 sizes from the perf model alone.

The perf model is the same profile ``slo`` is given (``CapacityModel.profile`` with its engine limits), so both
know the hardware equally. Between adjustments the targets hold. Colocated pools get the larger of the two counts.
Dynamo's GPU budget clamp is left to pdscale's guards, which apply it to every policy alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.protocols import CapacityModel, PolicyContext, Proposal
from pdscale.controller.core.types import DataState, PoolRole
from pdscale.controller.policies.params import Param, validate_params

__all__ = ["DynamoLikePolicy", "arima_next", "decode_engine_rps", "prefill_engine_rps"]

PARAMS: Mapping[str, Param] = {
    "adjustment_interval_s": Param(float, 180.0, lambda v: v > 0, "must be > 0"),
    "predictor": Param(str, "arima", lambda v: v in ("arima", "constant"), "must be 'arima' or 'constant'"),
    "min_points": Param(int, 5, lambda v: v >= 1, "must be >= 1"),
    "min_endpoint": Param(int, 1, lambda v: v >= 0, "must be >= 0"),
    "max_change": Param(int, 8, lambda v: v >= 1, "must be >= 1"),
    "isl_tokens": Param(float, 1024.0, lambda v: v > 0, "must be > 0"),
    "osl_tokens": Param(float, 256.0, lambda v: v > 0, "must be > 0"),
}

_HISTORY = 64
"""Intervals of history the predictor keeps (Dynamo's predictors keep a bounded window too)."""
_SERIES = ("num_req", "isl", "osl")


def _ar_fit(y: np.ndarray, p: int) -> tuple[float, float] | None:
    """One-step forecast and AIC of an AR(p) with a constant fitted by least squares; None if too short."""
    n = len(y) - p
    if n < p + 2:
        return None
    cols = [np.ones(n)] + [y[p - k - 1 : len(y) - k - 1] for k in range(p)]
    x = np.column_stack(cols)
    target = y[p:]
    coef, *_ = np.linalg.lstsq(x, target, rcond=None)
    sse = float(np.sum((target - x @ coef) ** 2))
    aic = n * math.log(max(sse, 1e-12) / n) + 2.0 * (p + 1)
    last = np.concatenate([[1.0], y[::-1][:p]])
    return float(last @ coef), aic


def arima_next(history: Sequence[float], min_points: int = 5) -> float:
    """Next value of a series: ARIMA(p, d, 0) with p in 0..2 and d in 0..1, the order with the lowest AIC.

    A small stand-in for the ``pmdarima.auto_arima`` Dynamo's ARIMA predictor calls: differencing (d = 1)
    follows trends, AR terms follow momentum. Fewer than ``min_points`` values (or a flat series): the last value,
    Dynamo's constant fallback during warm-up. Never negative.
    """
    if not history:
        return 0.0
    y = np.asarray(history, dtype=float)
    if len(y) < min_points or float(np.ptp(y)) == 0.0:
        return max(0.0, float(y[-1]))
    best: tuple[float, float] | None = None
    for d in (0, 1):
        series = np.diff(y) if d else y
        for p in (0, 1, 2):
            fit = _ar_fit(series, p)
            if fit is None:
                continue
            step, aic = fit
            forecast = float(y[-1]) + step if d else step
            if best is None or aic < best[1]:
                best = (forecast, aic)
    if best is None:
        return max(0.0, float(y[-1]))
    return max(0.0, best[0])


def prefill_engine_rps(model: CapacityModel, isl_tokens: float) -> tuple[float, float]:
    """(requests/s one prefill engine serves, its TTFT in ms) for prompts of ``isl_tokens``.

    One prompt's wall time, chunked by the engine's batched-token limit: a batch of B prompts takes about B
    times as long, so the rate is the same as one at a time (Dynamo's ``find_best_engine_prefill_rps``).
    """
    chunk = float(model.params.token_budget)
    if isl_tokens > chunk:
        chunks = math.ceil(isl_tokens / chunk)
        rest = isl_tokens - (chunks - 1) * chunk
        wall_ms = (chunks - 1) * model.profile.prefill_ms(chunk, 1.0) + model.profile.prefill_ms(rest, 1.0)
    else:
        wall_ms = model.profile.prefill_ms(isl_tokens, 1.0)
    wall_ms = max(wall_ms, 1e-6)
    return 1e3 / wall_ms, wall_ms


def decode_engine_rps(model: CapacityModel, itl_ms: float, isl_tokens: float, osl_tokens: float) -> tuple[float, int]:
    """(requests/s one decode engine serves, the batch it runs) at the largest batch whose step meets ``itl_ms``.

    The batch is bounded by the KV cache at context ``ISL + OSL/2`` and by the engine's sequence limit; where
    even batch 1 misses the target, batch 1 (Dynamo's ``find_best_engine_decode_rps``).
    """
    context = isl_tokens + osl_tokens / 2.0
    kv_cap = max(1, int(model.profile.max_kv_tokens / max(context, 1.0)))
    hi = max(1, min(kv_cap, model.params.max_running_seqs))
    best, best_ms = 1, model.profile.decode_step_ms(1, context)
    if best_ms <= itl_ms:
        lo = 1
        while lo <= hi:
            mid = (lo + hi) // 2
            step = model.profile.decode_step_ms(mid, context)
            if step <= itl_ms:
                best, best_ms, lo = mid, step, mid + 1
            else:
                hi = mid - 1
    return best / (osl_tokens * max(best_ms, 1e-6) / 1e3), best


def _num(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    return None


class DynamoLikePolicy:
    """Dynamo 1.6.1 SLA planner's throughput-based scaling at a fixed adjustment interval."""

    name = "dynamo-like"
    uses_forecasts = False

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = validate_params("dynamo-like", params, PARAMS)
        self.defaults = Workload(self.params["isl_tokens"], self.params["osl_tokens"])

    @staticmethod
    def _observe(ctx: PolicyContext) -> tuple[float, float | None, float | None] | None:
        """(arrivals/s, ISL, OSL) the frontend reports now: the first pool with an OK arrival reading."""
        for name in ctx.pools:
            obs = ctx.observations.get(name)
            if obs is None or obs.state is not DataState.OK:
                continue
            s = obs.signals
            rate = s.arrival_rate_per_s if s.arrival_rate_per_s is not None else s.request_rate_per_s
            if rate is None or not math.isfinite(rate) or rate < 0:
                continue
            isl = s.isl_mean_tokens
            if not isl and s.prompt_arrival_tokens_per_s and rate > 0:
                isl = s.prompt_arrival_tokens_per_s / rate
            return rate, isl or None, s.osl_mean_tokens or None
        return None

    @staticmethod
    def _accumulate(ctx: PolicyContext, state: dict[str, Any]) -> None:
        """Add this tick's arrivals and lengths to the interval being collected (like Dynamo's interval query)."""
        acc = dict(state.get("acc") or {})
        last = _num(state.get("last_seen_s"))
        span = ctx.tick_s if last is None else min(max(0.0, ctx.now_s - last), 4.0 * ctx.tick_s)
        state["last_seen_s"] = ctx.now_s
        seen = DynamoLikePolicy._observe(ctx)
        if seen is None or span <= 0:
            state["acc"] = acc
            return
        rate, isl, osl = seen
        req = rate * span
        acc["req"] = (_num(acc.get("req")) or 0.0) + req
        acc["span_s"] = (_num(acc.get("span_s")) or 0.0) + span
        for key, value in (("isl", isl), ("osl", osl)):
            if value is not None and value > 0 and req > 0:
                acc[f"{key}_w"] = (_num(acc.get(f"{key}_w")) or 0.0) + value * req
                acc[f"{key}_req"] = (_num(acc.get(f"{key}_req")) or 0.0) + req
        state["acc"] = acc

    def _close_interval(self, state: dict[str, Any], interval: float) -> bool:
        """Move the collected interval into the history; False when nothing was observed."""
        acc = state.pop("acc", None) or {}
        span = _num(acc.get("span_s")) or 0.0
        if span <= 0:
            return False
        hist = {k: list(v) for k, v in (state.get("history") or {}).items() if isinstance(v, list)}
        num_req = (_num(acc.get("req")) or 0.0) * interval / span
        prev = {k: (hist.get(k) or [None])[-1] for k in ("isl", "osl")}
        isl_req, osl_req = _num(acc.get("isl_req")), _num(acc.get("osl_req"))
        isl = (_num(acc.get("isl_w")) or 0.0) / isl_req if isl_req else prev["isl"] or self.defaults.isl_mean_tokens
        osl = (_num(acc.get("osl_w")) or 0.0) / osl_req if osl_req else prev["osl"] or self.defaults.osl_mean_tokens
        for key, value in zip(_SERIES, (num_req, isl, osl), strict=True):
            hist[key] = [*hist.get(key, []), float(value)][-_HISTORY:]
        state["history"] = hist
        return True

    def _predict(self, state: dict[str, Any]) -> tuple[float, float, float]:
        hist = state["history"]
        if self.params["predictor"] == "constant":
            return tuple(float(hist[k][-1]) for k in _SERIES)  # type: ignore[return-value]
        n = self.params["min_points"]
        num_req, isl, osl = (arima_next(hist[k], n) for k in _SERIES)
        return num_req, max(isl, 1.0), max(osl, 1.0)

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Collect arrivals every tick; once per adjustment interval forecast the next one and resize."""
        current = {n: ctx.states[n].target for n in ctx.pools}
        state = dict(ctx.state)
        self._accumulate(ctx, state)
        interval = self.params["adjustment_interval_s"]
        last = _num(state.get("last_adjust_s"))
        held = state.get("targets") if isinstance(state.get("targets"), dict) else None
        targets_now = {n: int(held.get(n, current[n])) for n in current} if held else current
        if last is None:
            state["last_adjust_s"] = ctx.now_s
            why = f"hold: collecting the first {interval:.0f} s interval of arrivals"
            return Proposal(targets=targets_now, reasons=dict.fromkeys(current, why), state=state)
        if ctx.now_s - last < interval:
            why = f"hold: next adjustment at {last + interval:.0f} s"
            return Proposal(targets=targets_now, reasons=dict.fromkeys(current, why), state=state)
        state["last_adjust_s"] = ctx.now_s
        model = ctx.capacity
        if model is None:
            why = "hold: dynamo-like needs a profile capacity model (capacity.profile)"
            return Proposal(targets=targets_now, reasons=dict.fromkeys(current, why), state=state)
        if not self._close_interval(state, interval):
            why = "hold: no arrivals observed in the last interval"
            return Proposal(targets=targets_now, reasons=dict.fromkeys(current, why), state=state)
        num_req, isl, osl = self._predict(state)
        rps = num_req / interval
        p_rps, ttft_ms = prefill_engine_rps(model, isl)
        floor = math.ceil(ttft_ms / ctx.slo.ttft_ms) if ttft_ms > ctx.slo.ttft_ms else 1
        minimum = self.params["min_endpoint"]
        n_p = max(math.ceil(rps / p_rps - 1e-9), floor, minimum)
        d_rps, batch = decode_engine_rps(model, ctx.slo.itl_ms, isl, osl)
        n_d = max(math.ceil(rps / d_rps - 1e-9), minimum)
        cap = self.params["max_change"]
        pred = f"predicted {rps:.2f} req/s, ISL {isl:.0f}, OSL {osl:.0f} ({self.params['predictor']})"
        targets: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for name, spec in ctx.pools.items():
            if spec.role is PoolRole.PREFILL:
                want = n_p
                why = f"{pred}: / {p_rps:.2f} req/s per prefill engine (TTFT {ttft_ms:.0f} ms)"
                if floor > 1:
                    why += f", latency floor {floor}"
            elif spec.role is PoolRole.DECODE:
                want = n_d
                why = f"{pred}: / {d_rps:.2f} req/s per decode engine (batch {batch}, ITL {ctx.slo.itl_ms:.0f} ms)"
            else:
                want = max(n_p, n_d)
                why = f"colocated: max(prefill {n_p}, decode {n_d})"
            now_t = current[name]
            bounded = min(max(want, now_t - cap), now_t + cap)
            if bounded != want:
                why += f"; change capped at {cap} ({want} wanted)"
            targets[name] = bounded
            reasons[name] = why
        state["targets"] = targets
        return Proposal(targets=targets, reasons=reasons, state=state)
