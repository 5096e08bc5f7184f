"""Detects level shifts (outages, sudden traffic moves) so smoothing state can be reset."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["LevelShiftDetector"]


class LevelShiftDetector:
    """Flags a shift when the median of the newest ``recent`` steps leaves the band of the steps before.

    The band is ``max(k_mad * MAD, rel * |median|, k_mad * noise)`` around the reference median, where
    ``noise`` is a long-run mean absolute one-step change, so sparse or bursty series do not trigger on
    every burst. Every recent value must lie beyond half the band on the same side. After a shift the
    reference restarts from the new level, so a return (end of an outage) is detected the same way.
    """

    def __init__(
        self, *, recent: int = 4, reference: int = 30, k_mad: float = 5.0, rel: float = 0.5, noise_alpha: float = 0.02
    ) -> None:
        self.recent = recent
        self.reference = reference
        self.k_mad = k_mad
        self.rel = rel
        self.noise_alpha = noise_alpha
        self._window: deque[float] = deque(maxlen=recent + reference)
        self._noise = math.nan
        self._prev = math.nan

    def update(self, value: float) -> bool:
        """Feed one closed step (NaN skipped); True when a level shift ends at this step."""
        if not math.isfinite(value):
            return False
        if math.isfinite(self._prev):
            d = abs(value - self._prev)
            self._noise = d if not math.isfinite(self._noise) else self._noise + self.noise_alpha * (d - self._noise)
        self._prev = value
        self._window.append(value)
        if len(self._window) < self.recent + min(self.reference, 3 * self.recent):
            return False
        # Windows hold a few dozen values: sorting Python floats beats numpy's per-call overhead tenfold.
        vals = list(self._window)
        ref, rec = vals[: -self.recent], vals[-self.recent :]
        med = _median(ref)
        mad = 1.4826 * _median([abs(v - med) for v in ref])
        noise = self._noise if math.isfinite(self._noise) else 0.0
        band = max(self.k_mad * mad, self.rel * abs(med), self.k_mad * noise, 1e-9)
        diff = _median(rec) - med
        sign = math.copysign(1.0, diff)
        same_side = all((v - med) * sign > band / 2 for v in rec)
        if abs(diff) > band and same_side:
            self._window.clear()
            self._window.extend(rec)
            return True
        return False

    def reset(self) -> None:
        """Forget all history."""
        self._window.clear()
        self._noise = math.nan
        self._prev = math.nan


def _median(values: list[float]) -> float:
    """Median of a non-empty list (as numpy's: the mean of the two middle values for an even count)."""
    v = sorted(values)
    n = len(v)
    mid = n // 2
    return v[mid] if n % 2 else (v[mid - 1] + v[mid]) / 2.0
