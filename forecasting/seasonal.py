"""Seasonal history of a demand signal and the floor it implies: what yesterday and last week did at this time.

Production LLM traffic repeats by the day and the week (the bundled ServeGen curve's 14 days; the Azure LLM
inference traces' diurnal swing): a gap at night is followed by the morning's load, every day. A forecaster
fed only the last minutes reads a gap as the new normal and sizes the return one cold start too late. The
floor here says, from the same clock time one day and one week earlier, what is coming back.

``SeasonalHistory`` keeps one signal's per-bin means over a week and a day (11,580 bins of 60 s), fed by
the loop with the value each tick's forecaster gets and, at start-up, by a backfill of past days (a scenario's
``history`` section in the bench; on a real cluster it would be a Prometheus range query, which the daemon does not
issue yet).

``seasonal_floor`` is pure. For each lag (1 day, 7 days) it reads history at ``now + lead - lag`` (the
median of the three bins around it: one missing or odd bin does not move it) and scales it by how much of
history's load *came back* recently: the ratio of today's sum to history's sum over the last ``window_s``,
at the same clock times, capped at ``max_ratio``. A genuinely changed normal (the return did not come, a
holiday, a lost customer) lowers that ratio within minutes of the missed return, and the floor decays with
it; a day busier than history keeps the ratio at its cap, so the floor never asks for more than history saw.
Lags without enough paired data (``min_coverage`` of the window's bins) give nothing. The floor is the
largest of the lags' values: each is already corrected by its own ratio, so one abnormal lag (yesterday a
holiday) does not hide the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pdscale.forecasting.grid import FloatArray

__all__ = [
    "FloorSettings",
    "SeasonalFloor",
    "SeasonalHistory",
    "SeasonalMatch",
    "SeasonalView",
    "came_back",
    "seasonal_floor",
]

DAY_S = 86400.0
WEEK_S = 7 * DAY_S


class SeasonalView(Protocol):
    """What the floor reads: per-bin means over a time range, and the median near one time."""

    @property
    def bin_s(self) -> float: ...

    def values(self, t0: float, t1: float) -> FloatArray: ...

    def aligned(self, t0: float, t1: float, lags_s: tuple[float, ...]) -> FloatArray: ...

    def median_near(self, t: float) -> float: ...


class SeasonalHistory:
    """Per-bin means of one signal over the last ``span_s`` (a week and a day by default); missing bins are NaN.

    Bin ``k`` covers ``[k * bin_s, (k + 1) * bin_s)``. Samples may arrive in any order (a backfill after live
    samples); a sample older than the span is dropped. None, NaN and negative values are missing.
    """

    def __init__(self, bin_s: float = 60.0, span_s: float = WEEK_S + DAY_S + 3600.0) -> None:
        if not (math.isfinite(bin_s) and bin_s > 0):
            raise ValueError(f"bin_s must be a positive number of seconds, got {bin_s!r}")
        if not (math.isfinite(span_s) and span_s >= 2 * bin_s):
            raise ValueError(f"span_s must cover at least two bins, got {span_s!r}")
        self._bin_s = float(bin_s)
        self._n = math.ceil(span_s / bin_s)
        self._sum = np.zeros(self._n)
        self._count = np.zeros(self._n)
        self._key = np.full(self._n, np.iinfo(np.int64).min, dtype=np.int64)
        self._newest: int | None = None

    @property
    def bin_s(self) -> float:
        """Width of a bin in seconds."""
        return self._bin_s

    def _bin(self, t: float) -> int:
        return math.floor(t / self._bin_s + 1e-9)

    def observe(self, t: float, value: float | None) -> None:
        """One sample at ``t`` seconds (None / NaN / negative: missing, ignored)."""
        if value is None or not math.isfinite(t) or not math.isfinite(value) or value < 0:
            return
        k = self._bin(t)
        if self._newest is not None and k <= self._newest - self._n:
            return  # older than the span
        slot = k % self._n
        if self._key[slot] != k:
            if self._key[slot] > k:
                return  # the slot already holds a newer bin
            self._key[slot], self._sum[slot], self._count[slot] = k, 0.0, 0.0
        self._sum[slot] += value
        self._count[slot] += 1.0
        self._newest = k if self._newest is None else max(self._newest, k)

    def backfill(self, times: Iterable[float], values: Iterable[float | None]) -> int:
        """Feed past samples (e.g. a range query at start-up); returns how many were finite."""
        n = 0
        for t, v in zip(times, values, strict=True):
            if v is not None and math.isfinite(v) and v >= 0:
                n += 1
            self.observe(float(t), v)
        return n

    def values(self, t0: float, t1: float) -> FloatArray:
        """Means of the bins containing ``t0`` .. ``t1`` (inclusive), oldest first; NaN where nothing is held."""
        k0, k1 = self._bin(t0), self._bin(t1)
        if k1 < k0:
            return np.empty(0)
        ks = np.arange(k0, k1 + 1, dtype=np.int64)
        slots = ks % self._n
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(self._key[slots] == ks, self._sum[slots] / self._count[slots], np.nan)
        return out

    def aligned(self, t0: float, t1: float, lags_s: tuple[float, ...]) -> FloatArray:
        """Row 0: ``values(t0, t1)``; row ``i``: the same bins ``lags_s[i - 1]`` earlier (one gather for all)."""
        k0, k1 = self._bin(t0), self._bin(t1)
        if k1 < k0:
            return np.empty((1 + len(lags_s), 0))
        shifts = np.array([0, *(round(lag / self._bin_s) for lag in lags_s)], dtype=np.int64)
        ks = np.arange(k0, k1 + 1, dtype=np.int64)[None, :] - shifts[:, None]
        slots = ks % self._n
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(self._key[slots] == ks, self._sum[slots] / self._count[slots], np.nan)
        return out

    def mean_at(self, t: float) -> float:
        """Mean of the bin containing ``t``; NaN when it is not held."""
        k = self._bin(t)
        slot = k % self._n
        if self._key[slot] != k or self._count[slot] <= 0:
            return math.nan
        return float(self._sum[slot] / self._count[slot])

    def median_near(self, t: float) -> float:
        """Median of the held bins among the one containing ``t`` and its two neighbours; NaN when none is."""
        b = self._bin_s
        got = sorted(v for v in (self.mean_at(t - b), self.mean_at(t), self.mean_at(t + b)) if not math.isnan(v))
        if not got:
            return math.nan
        mid = len(got) // 2
        return got[mid] if len(got) % 2 else (got[mid - 1] + got[mid]) / 2.0


@dataclass(frozen=True, slots=True)
class FloorSettings:
    """How the floor reads history (see the module docstring)."""

    lags_s: tuple[float, ...] = (DAY_S, WEEK_S)
    window_s: float = 1800.0
    """How far back today is compared with history to judge whether its load came back."""
    min_coverage: float = 0.5
    """Share of the window's bins that must be held on both days for a lag to count."""
    max_ratio: float = 1.0
    """The most today's level may be scaled above history's (1: the floor never exceeds what history saw)."""

    def __post_init__(self) -> None:
        if not self.lags_s or any(not (math.isfinite(x) and x > 0) for x in self.lags_s):
            raise ValueError(f"lags_s must be positive seconds, got {self.lags_s!r}")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window_s must be > 0, got {self.window_s!r}")
        if not 0 < self.min_coverage <= 1:
            raise ValueError(f"min_coverage must be in (0, 1], got {self.min_coverage!r}")
        if not self.max_ratio > 0:
            raise ValueError(f"max_ratio must be > 0, got {self.max_ratio!r}")


@dataclass(frozen=True, slots=True)
class SeasonalMatch:
    """One lag's reading: history at the target time, the share of history's load that came back, their product."""

    lag_s: float
    history: float
    ratio: float
    floor: float


@dataclass(frozen=True, slots=True)
class SeasonalFloor:
    """The floor on a signal at ``now + lead`` and the lags it came from."""

    value: float
    matches: tuple[SeasonalMatch, ...]

    def describe(self) -> str:
        """E.g. ``1d ago 24.1 x0.98, 7d ago 23.0 x1.00``."""
        return ", ".join(f"{_lag_name(m.lag_s)} ago {m.history:.3g} x{m.ratio:.2f}" for m in self.matches)


def _lag_name(lag_s: float) -> str:
    if lag_s % DAY_S == 0:
        return f"{lag_s / DAY_S:g}d"
    return f"{lag_s / 3600.0:g}h"


def came_back(load: SeasonalView, now_s: float, settings: FloorSettings | None = None) -> dict[float, float]:
    """Per lag, the share of history's load over the last ``window_s`` that came back today (today's sum over
    history's at the same clock times, capped at ``max_ratio``); a lag without ``min_coverage`` of the window's
    bins held on both days, or with nothing on either, is left out.

    Arrivals are the better gauge of how much traffic came back: they are linear in it, while decoding
    concurrency grows faster than traffic (steps slow down as batches fill), so its ratio in a quiet hour
    understates a return."""
    cfg = settings or FloorSettings()
    rows = load.aligned(now_s - cfg.window_s, now_s, cfg.lags_s)
    today, pasts = rows[0], rows[1:]
    need = max(1, math.ceil(cfg.min_coverage * len(today)))
    both = ~np.isnan(pasts + today)  # per lag, the bins held on both days
    counts = both.sum(axis=1)
    past_sums = np.where(both, pasts, 0.0).sum(axis=1)
    today_sums = np.where(both, today, 0.0).sum(axis=1)
    out: dict[float, float] = {}
    for i, lag in enumerate(cfg.lags_s):
        if counts[i] < need:
            continue
        past_sum, today_sum = float(past_sums[i]), float(today_sums[i])
        if past_sum > 0:
            out[float(lag)] = min(cfg.max_ratio, today_sum / past_sum)
        elif today_sum > 0:
            out[float(lag)] = cfg.max_ratio
    return out


def seasonal_floor(
    history: SeasonalView,
    now_s: float,
    lead_s: float,
    settings: FloorSettings | None = None,
    load: SeasonalView | None = None,
    ratios: dict[float, float] | None = None,
) -> SeasonalFloor | None:
    """The seasonal floor on the signal at ``now_s + lead_s``; None when no lag has enough history.

    ``ratios`` are ``came_back`` on ``load`` (default: the signal's own history), computed here when not given
    (a caller flooring several signals of one pool computes them once).
    """
    cfg = settings or FloorSettings()
    if ratios is None:
        ratios = came_back(load if load is not None else history, now_s, cfg)
    matches: list[SeasonalMatch] = []
    for lag, ratio in ratios.items():
        value = history.median_near(now_s + lead_s - lag)
        if not math.isnan(value):
            matches.append(SeasonalMatch(lag_s=lag, history=value, ratio=ratio, floor=ratio * value))
    if not matches:
        return None
    return SeasonalFloor(value=max(m.floor for m in matches), matches=tuple(matches))
