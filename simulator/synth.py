"""Synthetic traces: arrivals from a rate curve, request lengths resampled from a real trace.

Arrivals are a non-homogeneous Poisson process whose rate is the curve's piecewise-linear rate x `rate_scale`.
Time is cut into bins of `burst_period_s` (at most one curve window); each bin draws a Poisson count of its
integrated rate and places the arrivals by inverting the bin's linear rate profile. With `burstiness` b > 0
each bin's rate is multiplied by an independent Gamma factor of mean 1 and coefficient of variation b (a
doubly stochastic Cox process): the mean rate is kept, the counts get over-dispersed, as real traffic is.
Lengths are drawn as (input, output) pairs from `lengths`, keeping their correlation.
Everything is vectorised: two million requests take about a second.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from pdscale.simulator.traces import RateCurve, Trace, TraceError

__all__ = ["DEFAULT_BURST_PERIOD_S", "synthesize"]

DEFAULT_BURST_PERIOD_S = 60.0
"""Length of the bins whose rate gets one Gamma burst factor."""


def _place(
    u: npt.NDArray[np.float64], a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Fractions in [0, 1) distributed with density proportional to a + (b - a) x, by inverse CDF (stable form)."""
    root = np.sqrt(a * a + u * (b * b - a * a))
    denom = a + root
    safe = np.where(denom > 0, denom, 1.0)
    out: npt.NDArray[np.float64] = np.where(denom > 0, u * (a + b) / safe, u)
    return np.clip(out, 0.0, np.nextafter(1.0, 0.0))


def synthesize(
    rate_curve: RateCurve,
    lengths: Trace,
    *,
    duration_s: float | None = None,
    start_s: float = 0.0,
    rate_scale: float = 1.0,
    burstiness: float = 0.0,
    seed: int = 0,
    burst_period_s: float = DEFAULT_BURST_PERIOD_S,
    name: str | None = None,
) -> Trace:
    """A trace of `duration_s` (default: the rest of the curve after `start_s`) with arrivals from 0.

    Trace time 0 is curve time `start_s`; past the curve's end the curve repeats. The same arguments and
    `seed` give the same trace.
    """
    if len(lengths) == 0:
        raise TraceError(f"{lengths.name}: cannot sample lengths from an empty trace")
    for label, value in (("rate_scale", rate_scale), ("burstiness", burstiness), ("start_s", start_s)):
        if not math.isfinite(value) or value < 0:
            raise TraceError(f"{label} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(burst_period_s) and burst_period_s > 0):
        raise TraceError(f"burst_period_s must be positive, got {burst_period_s!r}")
    span = rate_curve.duration_s - start_s if duration_s is None else duration_s
    if not (math.isfinite(span) and span > 0):
        raise TraceError(
            f"duration_s must be positive, got {span!r} (start_s {start_s} of a {rate_curve.duration_s} s curve)"
        )

    rng = np.random.default_rng(seed)
    width = min(burst_period_s, rate_curve.window_s)
    n_bins = math.ceil(span / width)
    edges = np.minimum(np.arange(n_bins + 1, dtype=np.float64) * width, span)
    widths = np.diff(edges)
    r0 = rate_curve.rate_at(edges[:-1] + start_s) * rate_scale
    r1 = rate_curve.rate_at(edges[1:] + start_s) * rate_scale
    if burstiness > 0:
        shape = 1.0 / (burstiness * burstiness)
        factor = rng.gamma(shape, 1.0 / shape, size=n_bins)
        r0, r1 = r0 * factor, r1 * factor
    counts = rng.poisson((r0 + r1) / 2.0 * widths)
    total = int(counts.sum())
    bins = np.repeat(np.arange(n_bins), counts)
    frac = _place(rng.random(total), r0[bins], r1[bins])
    arrival = np.sort(edges[bins] + frac * widths[bins])
    pick = rng.integers(0, len(lengths), size=total)
    label = name if name is not None else f"synth({rate_curve.name} x{rate_scale:g}, {lengths.name}, seed {seed})"
    return Trace(
        arrival.astype(np.float64),
        lengths.input_tokens[pick].astype(np.int64),
        lengths.output_tokens[pick].astype(np.int64),
        label,
    )
