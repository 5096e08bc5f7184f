"""Histograms the simulator keeps: Prometheus-style buckets (vLLM bounds) and a fine log histogram for quantiles."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ITERATION_TOKEN_BUCKETS",
    "ITL_BUCKETS_S",
    "REQUEST_LATENCY_BUCKETS_S",
    "TTFT_BUCKETS_S",
    "BucketHistogram",
    "HistogramSnapshot",
    "LogHistogram",
    "token_buckets",
]

TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's bucket bounds of vllm:time_to_first_token_seconds."""

ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
"""vLLM's bucket bounds of vllm:inter_token_latency_seconds."""

REQUEST_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
"""vLLM's bucket bounds of its request phase histograms (vllm:request_prefill_time_seconds and the others)."""

ITERATION_TOKEN_BUCKETS: tuple[float, ...] = (
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
)  # fmt: skip
"""Bucket bounds of vllm:iteration_tokens_total (tokens per engine step), as vLLM's /metrics example shows them."""


def token_buckets(max_value: int) -> tuple[float, ...]:
    """vLLM's 1-2-5 bucket bounds up to max_value (request prompt and generation token histograms)."""
    bounds: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(bounds)
            bounds.append(float(value))
        exponent += 1


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A cumulative histogram as Prometheus exposes it.

    Attributes:
        bounds: upper bounds of the finite buckets (le), ascending.
        cumulative_counts: observations <= each bound, then the +Inf bucket (len(bounds) + 1 values).
        sum: sum of observed values.
        count: number of observations (equals the +Inf bucket).
    """

    bounds: tuple[float, ...]
    cumulative_counts: tuple[float, ...]
    sum: float
    count: float


class BucketHistogram:
    """A mutable histogram over fixed bucket bounds with weighted observations."""

    __slots__ = ("_counts", "bounds", "count", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0.0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0.0

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Add `weight` observations of `value`."""
        self._counts[bisect_left(self.bounds, value)] += weight
        self.sum += value * weight
        self.count += weight

    def snapshot(self) -> HistogramSnapshot:
        """Cumulative view of the current counts."""
        running = 0.0
        cumulative: list[float] = []
        for c in self._counts:
            running += c
            cumulative.append(running)
        return HistogramSnapshot(self.bounds, tuple(cumulative), self.sum, self.count)


class LogHistogram:
    """Log-spaced histogram (200 bins per decade from 10 us to 1000 s) for cheap weighted quantiles."""

    __slots__ = ("_counts", "_log_lo", "_per_decade")

    def __init__(self, lo_s: float = 1e-5, decades: int = 8, per_decade: int = 200) -> None:
        self._log_lo = math.log10(lo_s)
        self._per_decade = per_decade
        self._counts = [0.0] * (decades * per_decade)

    def observe(self, value: float, weight: float = 1.0) -> None:
        """Add `weight` observations of `value` (seconds, > 0)."""
        idx = int((math.log10(value) - self._log_lo) * self._per_decade) if value > 0 else 0
        idx = min(max(idx, 0), len(self._counts) - 1)
        self._counts[idx] += weight

    @property
    def total(self) -> float:
        """Total weight observed."""
        return float(sum(self._counts))

    def quantile(self, q: float) -> float:
        """Value below which a share q of the weight lies (geometric bin centre); NaN when empty."""
        counts = np.asarray(self._counts)
        total = counts.sum()
        if total <= 0:
            return math.nan
        idx = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
        idx = min(idx, len(counts) - 1)
        return float(10 ** (self._log_lo + (idx + 0.5) / self._per_decade))
