"""Horizon-ahead residuals scored online, turned into calibrated (conformal-style) quantiles."""

from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = ["ResidualTracker"]

FloatArray = npt.NDArray[np.float64]


class ResidualTracker:
    """Remembers the point forecast made at each step for ``h`` steps ahead and, when that step closes,
    keeps the residual ``actual - forecast``. Quantile ``q`` of a new forecast is the forecast plus the
    empirical ``q`` quantile of the newest ``window`` residuals at that horizon (split-conformal style:
    only outcomes already seen are used, so the interval stays calibrated as the error level changes).
    Before ``min_residuals`` are known it falls back to a normal band of ``sigma1 * sqrt(h)``.

    A level shift (``forget_shift``) is an event, not noise: the residuals of forecasts that straddle it are
    dropped, or a 3x load step would keep a p90 band of twice the new level for as long as it stays in the window.
    """

    def __init__(self, *, window: int = 400, min_residuals: int = 30, max_horizons: int = 8) -> None:
        self.window = window
        self.min_residuals = min_residuals
        self.max_horizons = max_horizons
        self._pending: dict[int, dict[int, float]] = {}
        self._residuals: dict[int, deque[float]] = {}
        self._targets: dict[int, deque[int]] = {}
        """The step each kept residual scored, parallel to ``_residuals``."""
        self._offsets: dict[tuple[int, tuple[float, ...]], FloatArray] = {}
        """Residual quantiles per (horizon, levels), valid until that horizon's next residual arrives."""

    @property
    def horizons(self) -> tuple[int, ...]:
        """Horizons (steps) tracked."""
        return tuple(self._pending)

    def track(self, h: int) -> None:
        """Start tracking horizon ``h`` (steps); ignored once ``max_horizons`` are tracked."""
        if h not in self._pending and len(self._pending) < self.max_horizons:
            self._pending[h] = {}
            self._residuals[h] = deque(maxlen=self.window)
            self._targets[h] = deque(maxlen=self.window)

    def record(self, origin: int, h: int, forecast: float) -> None:
        """The forecast made at step ``origin`` for step ``origin + h``."""
        if h in self._pending and math.isfinite(forecast):
            self._pending[h][origin + h] = forecast

    def resolve(self, k: int, actual: float) -> None:
        """Step ``k`` closed with ``actual`` (NaN: the forecasts for it are dropped unscored)."""
        for h, pending in self._pending.items():
            fc = pending.pop(k, None)
            if fc is not None and math.isfinite(actual):
                self._residuals[h].append(actual - fc)
                self._targets[h].append(k)
                for stale in [c for c in self._offsets if c[0] == h]:
                    del self._offsets[stale]
            if len(pending) > 4 * h + 16:  # forecasts whose target was skipped over
                for key in [key for key in pending if key <= k]:
                    del pending[key]

    def forget_shift(self, k: int, span: int) -> int:
        """A level shift was detected at step ``k``, its onset at most ``span`` steps earlier: drop the residuals
        scored on the last ``span`` steps and every forecast still pending (all made before the shift was known,
        at the old level); returns how many residuals were dropped. The residuals from before the onset stay, so
        the band keeps the noise it knew until the new level has its own."""
        dropped = 0
        for h, pending in self._pending.items():
            pending.clear()
            targets, res = self._targets[h], self._residuals[h]
            while targets and targets[-1] > k - span:  # steps close in order: the newest are at the right
                targets.pop()
                res.pop()
                dropped += 1
        self._offsets.clear()
        return dropped

    def scored_since(self, h: int, k: int) -> int:
        """Residuals known at horizon ``h`` (nearest tracked) for steps after ``k``."""
        key = self._nearest_key(h)
        if key is None:
            return 0
        n = 0
        for t in reversed(self._targets[key]):
            if t <= k:
                break
            n += 1
        return n

    def count(self, h: int) -> int:
        """Residuals known at horizon ``h`` (nearest tracked)."""
        res = self._nearest(h)
        return len(res) if res is not None else 0

    def _nearest_key(self, h: int) -> int | None:
        if not self._residuals:
            return None
        return min(self._residuals, key=lambda x: (abs(x - h), x))

    def _nearest(self, h: int) -> deque[float] | None:
        key = self._nearest_key(h)
        return self._residuals[key] if key is not None else None

    def quantiles(self, point: float, h: int, qs: tuple[float, ...], sigma1: float) -> dict[float, float]:
        """Quantiles around ``point`` for ``h`` steps ahead, clipped at 0 and monotone in ``q``."""
        key = self._nearest_key(h)
        res = self._residuals[key] if key is not None else None
        if key is not None and res is not None and len(res) >= self.min_residuals:
            cached = self._offsets.get((key, qs))
            if cached is None:  # once per step and horizon: every predict of the step reuses it
                cached = np.quantile(np.fromiter(res, dtype=float), qs)
                self._offsets[(key, qs)] = cached
            vals = [point + float(v) for v in cached]
        else:
            s = sigma1 * math.sqrt(max(h, 1)) if math.isfinite(sigma1) else 0.0
            vals = [point + NormalDist().inv_cdf(min(max(q, 1e-6), 1 - 1e-6)) * s for q in qs]
        out: dict[float, float] = {}
        running = 0.0
        for q, v in sorted(zip(qs, vals, strict=True)):
            running = max(running, v if math.isfinite(v) else point)
            out[q] = running
        return out
