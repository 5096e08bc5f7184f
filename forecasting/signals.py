"""Per-step demand series from per-request arrays: prefill tokens/s, request rate, decode concurrency, KV."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pdscale.forecasting.base import Signal
from pdscale.forecasting.grid import FloatArray

__all__ = ["DecodeTimeModel", "SignalSeries", "build_signals", "series_from_rate"]


@dataclass(frozen=True, slots=True)
class DecodeTimeModel:
    """When a request decodes: from ``arrival + ttft_ms`` for ``output_tokens * itl_ms``."""

    itl_ms: float = 40.0
    ttft_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.itl_ms > 0:
            raise ValueError(f"itl_ms must be > 0, got {self.itl_ms!r}")
        if self.ttft_ms < 0:
            raise ValueError(f"ttft_ms must be >= 0, got {self.ttft_ms!r}")

    def decode_s(self, output_tokens: FloatArray) -> FloatArray:
        """Decode duration of each request (seconds)."""
        return np.asarray(output_tokens, dtype=float) * self.itl_ms / 1000.0


@dataclass(frozen=True, slots=True)
class SignalSeries:
    """Per-step series; element ``k`` covers ``(t_s[k] - step_s, t_s[k]]`` (labelled by its end)."""

    step_s: float
    t_s: FloatArray
    prefill_tps: FloatArray
    request_rate_rps: FloatArray
    decode_concurrency: FloatArray
    kv_tokens: FloatArray
    decode_s: FloatArray
    """Mean decode duration of the requests arriving in the step (NaN where none arrived)."""

    def signal(self, signal: Signal | str) -> FloatArray:
        """The series of one signal."""
        s = Signal(signal)
        return {
            Signal.PREFILL_TPS: self.prefill_tps,
            Signal.REQUEST_RATE: self.request_rate_rps,
            Signal.DECODE_CONCURRENCY: self.decode_concurrency,
            Signal.KV_TOKENS: self.kv_tokens,
        }[s]


def _busy_integral(t: FloatArray, start: FloatArray, length: FloatArray, base: FloatArray, slope: float) -> FloatArray:
    """``sum_i integral_{-inf}^{t} f_i(u) du`` where ``f_i(u) = base_i + slope * (u - start_i)`` on
    ``[start_i, start_i + length_i)`` and 0 elsewhere, at every time in ``t`` (exact, vectorised)."""
    end = start + length
    o_a = np.argsort(start)
    a, ba = start[o_a], base[o_a]
    o_b = np.argsort(end)
    b, lb, bb, sb = end[o_b], length[o_b], base[o_b], start[o_b]
    # sums over requests started by t (as if still running), minus the part after each one's end
    ca = [np.concatenate(([0.0], np.cumsum(x))) for x in (np.ones_like(a), a, a * a, ba, ba * a)]
    done_full = np.concatenate(([0.0], np.cumsum(bb * lb + slope * lb * lb / 2)))
    cb = [np.concatenate(([0.0], np.cumsum(x))) for x in (np.ones_like(sb), sb, sb * sb, bb, bb * sb)]
    na = np.searchsorted(a, t, side="right")
    nb = np.searchsorted(b, t, side="right")

    def running(c: list[FloatArray], n: npt.NDArray[np.intp]) -> FloatArray:
        cnt, s1, s2, sbase, sbase_a = (x[n] for x in c)
        # sum base_i (t - a_i) + slope (t - a_i)^2 / 2
        return sbase * t - sbase_a + slope * (cnt * t * t - 2 * t * s1 + s2) / 2

    return running(ca, na) - running(cb, nb) + done_full[nb]


def build_signals(
    arrival_s: FloatArray,
    input_tokens: FloatArray,
    output_tokens: FloatArray,
    *,
    step_s: float,
    decode: DecodeTimeModel | None = None,
    t_end_s: float | None = None,
) -> SignalSeries:
    """Turns per-request arrays into per-step series on a grid of ``step_s`` from 0.

    prefill tokens/s and request rate count arrivals in each step; decode concurrency and KV tokens
    are exact time averages over the step of the sequences decoding (from ``decode``), with a
    sequence's KV growing from its prompt by one token per ITL.
    """
    decode = decode or DecodeTimeModel()
    a = np.asarray(arrival_s, dtype=float)
    inp = np.asarray(input_tokens, dtype=float)
    out = np.asarray(output_tokens, dtype=float)
    if not (a.shape == inp.shape == out.shape) or a.ndim != 1:
        raise ValueError("arrival_s, input_tokens and output_tokens must be 1-D arrays of the same length")
    if a.size and (np.any(~np.isfinite(a)) or np.any(inp < 0) or np.any(out < 0)):
        raise ValueError("arrival times must be finite and token counts >= 0")
    end = t_end_s if t_end_s is not None else (float(a.max()) if a.size else step_s)
    n = max(1, int(np.ceil(end / step_s - 1e-9)))
    edges = (np.arange(n + 1) * step_s).astype(np.float64)
    k = np.clip(np.ceil(a / step_s - 1e-9).astype(int), 0, n)  # step k covers ((k-1) step, k step]
    k = np.maximum(k, 1) - 1
    count = np.bincount(k, minlength=n)[:n].astype(float)
    tokens = np.bincount(k, weights=inp, minlength=n)[:n]
    dur = decode.decode_s(out)
    dsum = np.bincount(k, weights=dur, minlength=n)[:n]
    start = a + decode.ttft_ms / 1000.0
    conc = np.diff(_busy_integral(edges, start, dur, np.ones_like(dur), 0.0)) / step_s
    kv = np.diff(_busy_integral(edges, start, dur, inp, 1000.0 / decode.itl_ms)) / step_s
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_dur = np.where(count > 0, dsum / np.maximum(count, 1), np.nan)
    return SignalSeries(
        step_s=step_s,
        t_s=edges[1:],
        prefill_tps=tokens / step_s,
        request_rate_rps=count / step_s,
        decode_concurrency=np.maximum(conc, 0.0),
        kv_tokens=np.maximum(kv, 0.0),
        decode_s=mean_dur,
    )


def series_from_rate(
    rate_rps: FloatArray,
    *,
    step_s: float,
    input_tokens: FloatArray,
    output_tokens: FloatArray,
    decode: DecodeTimeModel | None = None,
    rng: np.random.Generator | None = None,
    poisson: bool = True,
) -> SignalSeries:
    """Per-step series from a request-rate series alone (no per-request trace).

    Each step draws ``N ~ Poisson(rate * step_s)`` requests (or exactly the mean when ``poisson`` is
    False) whose prompt and output lengths follow the given samples (normal approximation of the sum);
    decode concurrency is ``N / step_s * mean decode duration`` (Little's law, steps much longer than
    a decode).
    """
    decode = decode or DecodeTimeModel()
    rng = rng or np.random.default_rng(0)
    r = np.asarray(rate_rps, dtype=float)
    lam = np.where(np.isfinite(r), np.maximum(r, 0.0), 0.0) * step_s
    n = rng.poisson(lam).astype(float) if poisson else lam
    inp = np.asarray(input_tokens, dtype=float)
    dur = decode.decode_s(np.asarray(output_tokens, dtype=float))
    noise = rng.standard_normal(r.size) if poisson else np.zeros(r.size)
    tokens = np.maximum(n * inp.mean() + noise * np.sqrt(n) * inp.std(), 0.0)
    mean_dur = float(dur.mean())
    conc = n / step_s * mean_dur
    kv = conc * (inp.mean() + float(np.mean(np.asarray(output_tokens, dtype=float))) / 2)
    missing = ~np.isfinite(r)
    rate = np.where(missing, np.nan, n / step_s)
    return SignalSeries(
        step_s=step_s,
        t_s=((np.arange(r.size) + 1) * step_s).astype(np.float64),
        prefill_tps=np.where(missing, np.nan, tokens / step_s),
        request_rate_rps=rate,
        decode_concurrency=np.where(missing, np.nan, conc),
        kv_tokens=np.where(missing, np.nan, kv),
        decode_s=np.where(missing | (n == 0), np.nan, mean_dur),
    )
