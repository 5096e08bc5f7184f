"""Horizon-ahead residuals scored online, turned into calibrated (conformal-style) quantiles."""

from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist

import numpy as np

__all__ = ["ResidualTracker"]


class ResidualTracker:
    """Remembers the point forecast made at each step for ``h`` steps ahead and, when that step closes,
    keeps the residual ``actual - forecast``. Quantile ``q`` of a new forecast is the forecast plus the
    empirical ``q`` quantile of the newest ``window`` residuals at that horizon (split-conformal style:
    only outcomes already seen are used, so the interval stays calibrated as the error level changes).
    Before ``min_residuals`` are known it falls back to a normal band of ``sigma1 * sqrt(h)``.
    """

    def __init__(self, *, window: int = 400, min_residuals: int = 30, max_horizons: int = 8) -> None:
        self.window = window
        self.min_residuals = min_residuals
        self.max_horizons = max_horizons
        self._pending: dict[int, dict[int, float]] = {}
        self._residuals: dict[int, deque[float]] = {}

    @property
    def horizons(self) -> tuple[int, ...]:
        """Horizons (steps) tracked."""
        return tuple(self._pending)

    def track(self, h: int) -> None:
        """Start tracking horizon ``h`` (steps); ignored once ``max_horizons`` are tracked."""
        if h not in self._pending and len(self._pending) < self.max_horizons:
            self._pending[h] = {}
            self._residuals[h] = deque(maxlen=self.window)

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
            if len(pending) > 4 * h + 16:  # forecasts whose target was skipped over
                for key in [key for key in pending if key <= k]:
                    del pending[key]

    def count(self, h: int) -> int:
        """Residuals known at horizon ``h`` (nearest tracked)."""
        res = self._nearest(h)
        return len(res) if res is not None else 0

    def _nearest(self, h: int) -> deque[float] | None:
        if not self._residuals:
            return None
        best = min(self._residuals, key=lambda x: (abs(x - h), x))
        return self._residuals[best]

    def quantiles(self, point: float, h: int, qs: tuple[float, ...], sigma1: float) -> dict[float, float]:
        """Quantiles around ``point`` for ``h`` steps ahead, clipped at 0 and monotone in ``q``."""
        res = self._nearest(h)
        if res is not None and len(res) >= self.min_residuals:
            arr = np.fromiter(res, dtype=float)
            vals = [point + float(np.quantile(arr, q)) for q in qs]
        else:
            s = sigma1 * math.sqrt(max(h, 1)) if math.isfinite(sigma1) else 0.0
            vals = [point + NormalDist().inv_cdf(min(max(q, 1e-6), 1 - 1e-6)) * s for q in qs]
        out: dict[float, float] = {}
        running = 0.0
        for q, v in sorted(zip(qs, vals, strict=True)):
            running = max(running, v if math.isfinite(v) else point)
            out[q] = running
        return out
