"""Hindsight demand for the oracle policy: a trace's exact future, binned, queried by window.

Built from a trace's arrays (arrival time, prompt tokens, output tokens) and the capacity model, which gives
the decode time of a request (its output tokens times the step time at the ITL-constrained batch). Each
``bin_s`` bin holds the mean request rate, prompt tokens/s, decoding sequences and their KV tokens;
``peak(pool, start_s, end_s)`` returns, per signal of the pool's role, the largest bin value in the window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from pdscale.controller.core.capacity import ProfileCapacityModel, Workload
from pdscale.controller.core.types import ROLE_SIGNALS, SLO, PoolRole, Signal

__all__ = ["OracleDemand", "build_oracle_demand"]


@dataclass(frozen=True, slots=True)
class OracleDemand:
    """Binned future demand; ``roles`` maps pool names to roles."""

    bin_s: float
    roles: Mapping[str, PoolRole]
    series: Mapping[Signal, npt.NDArray[np.float64]]
    isl_mean: npt.NDArray[np.float64]
    isl_p90: npt.NDArray[np.float64]
    osl_mean: npt.NDArray[np.float64]

    def _bins(self, start_s: float, end_s: float) -> slice:
        n = len(self.isl_mean)
        lo = min(n, max(0, math.floor(start_s / self.bin_s)))
        hi = min(n, max(lo + 1, math.ceil(end_s / self.bin_s)))
        return slice(lo, hi)

    def peak(self, pool: str, start_s: float, end_s: float) -> Mapping[Signal, float]:
        """Per signal of the pool's role, the largest bin value in ``[start_s, end_s]`` (0 past the trace)."""
        sl = self._bins(start_s, end_s)
        out: dict[Signal, float] = {}
        for sig in ROLE_SIGNALS[self.roles[pool]]:
            values = self.series[sig][sl]
            out[sig] = float(values.max()) if len(values) else 0.0
        return out

    def workload(self, start_s: float, end_s: float, default: Workload) -> Workload:
        """Request shape of the busiest bin in the window (the default when no request arrives)."""
        sl = self._bins(start_s, end_s)
        rates = self.series[Signal.REQUEST_RATE][sl]
        if not len(rates) or rates.max() <= 0:
            return default
        i = sl.start + int(rates.argmax())
        conc = float(self.series[Signal.DECODE_CONCURRENCY][sl].sum())
        ctx = float(self.series[Signal.KV_TOKENS][sl].sum()) / conc if conc > 0 else None
        return Workload(
            float(self.isl_mean[i]), float(self.osl_mean[i]), float(self.isl_p90[i]), decode_context_tokens=ctx
        )


def build_oracle_demand(
    arrival_s: npt.ArrayLike,
    input_tokens: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    *,
    capacity: ProfileCapacityModel,
    slo: SLO,
    roles: Mapping[str, PoolRole],
    bin_s: float = 30.0,
) -> OracleDemand:
    """Bin a trace's future demand; decode residence = output tokens x step time at the ITL-bound batch."""
    arr = np.asarray(arrival_s, dtype=np.float64)
    inp = np.asarray(input_tokens, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    if not (arr.shape == inp.shape == out.shape) or arr.ndim != 1:
        raise ValueError("oracle demand: arrival_s, input_tokens and output_tokens must be 1-D arrays of one length")
    if not bin_s > 0:
        raise ValueError(f"oracle demand: bin_s must be > 0, got {bin_s}")
    n_bins = max(1, math.ceil((float(arr.max()) if len(arr) else 0.0) / bin_s) + 1)
    idx = np.minimum((arr // bin_s).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    tokens = np.bincount(idx, weights=inp, minlength=n_bins)
    osl_sum = np.bincount(idx, weights=out, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        isl_mean = np.where(count > 0, tokens / np.maximum(count, 1), 0.0)
        osl_mean = np.where(count > 0, osl_sum / np.maximum(count, 1), 0.0)
    isl_p90 = np.zeros(n_bins)
    order = np.argsort(idx, kind="stable")
    bounds = np.searchsorted(idx[order], np.arange(n_bins + 1))
    for b in range(n_bins):
        chunk = inp[order[bounds[b] : bounds[b + 1]]]
        if len(chunk):
            isl_p90[b] = float(np.quantile(chunk, 0.9))
    total = Workload(float(inp.mean()) if len(inp) else 1.0, float(out.mean()) if len(out) else 1.0)
    # Time-averaged decoding sequences (and their KV tokens) per bin, from residence intervals at the step of the
    # ITL-bound batch; twice: the running population's mean context (length-biased) sets that step.
    conc = kv = np.zeros(n_bins)
    for _ in range(2):
        b_cap = max(1, capacity.decode_batch(slo.itl_ms, total))
        step_s = capacity.profile.decode_step_ms(b_cap, total.ctx_tokens) / 1e3
        start, end = arr, arr + np.maximum(out - 1, 0) * step_s
        conc = _occupancy(start, end, np.ones_like(arr), bin_s, n_bins)
        kv = _occupancy(start, end, inp + out / 2.0, bin_s, n_bins)
        if conc.sum() > 0:
            total = replace(total, decode_context_tokens=float(kv.sum() / conc.sum()))
    series = {
        Signal.REQUEST_RATE: count / bin_s,
        Signal.PREFILL_TPS: tokens / bin_s,
        Signal.DECODE_CONCURRENCY: conc,
        Signal.KV_TOKENS: kv,
    }
    return OracleDemand(
        bin_s=bin_s, roles=dict(roles), series=series, isl_mean=isl_mean, isl_p90=isl_p90, osl_mean=osl_mean
    )


def _occupancy(
    start: npt.NDArray[np.float64],
    end: npt.NDArray[np.float64],
    weight: npt.NDArray[np.float64],
    bin_s: float,
    n_bins: int,
) -> npt.NDArray[np.float64]:
    """Mean over each bin of sum(weight_i) for intervals [start_i, end_i) covering the time."""
    edges = np.arange(n_bins + 1, dtype=np.float64) * np.float64(bin_s)

    def integral(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # sum_i w_i * |[start_i, end_i) ∩ [0, t)| for each t, via sorted cumulative sums.
        so = np.argsort(start)
        eo = np.argsort(end)
        s_sorted, ws = start[so], np.cumsum(weight[so])
        e_sorted, we = end[eo], np.cumsum(weight[eo])
        sw = np.cumsum(weight[so] * start[so])
        ew = np.cumsum(weight[eo] * end[eo])
        ks = np.searchsorted(s_sorted, t, side="right")
        ke = np.searchsorted(e_sorted, t, side="right")
        started_w = np.where(ks > 0, ws[np.maximum(ks - 1, 0)], 0.0)
        started_ws = np.where(ks > 0, sw[np.maximum(ks - 1, 0)], 0.0)
        ended_w = np.where(ke > 0, we[np.maximum(ke - 1, 0)], 0.0)
        ended_we = np.where(ke > 0, ew[np.maximum(ke - 1, 0)], 0.0)
        return t * started_w - started_ws - (t * ended_w - ended_we)

    if len(start) == 0:
        return np.zeros(n_bins)
    cum = integral(edges)
    return np.diff(cum) / bin_s
