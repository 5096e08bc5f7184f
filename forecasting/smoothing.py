"""Exponential smoothing with O(1) updates: EWMA (level) and damped Holt (level and trend)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.online import GridForecaster

__all__ = ["Ewma", "Holt"]

DEFAULT_ALPHAS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


class Ewma(GridForecaster):
    """Exponentially weighted moving average; a flat forecast at the smoothed level.

    With ``alpha=None`` (default) it runs one level per candidate in ``alphas`` side by side and
    forecasts with the one whose exponentially weighted absolute error at that horizon is lowest,
    so a noisy series gets heavy smoothing and a smooth one follows quickly. Each update is
    O(len(alphas) * tracked horizons). A level shift resets every level to the new recent median.
    """

    name = "ewma"

    def __init__(
        self, *, alpha: float | None = None, alphas: tuple[float, ...] = DEFAULT_ALPHAS, **kwargs: Any
    ) -> None:
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"ewma alpha must be in (0, 1], got {alpha!r}")
        kwargs.setdefault("min_history_steps", 1)
        super().__init__(**kwargs)
        self._alphas: FloatArray = np.array([alpha] if alpha is not None else alphas, dtype=float)
        self._levels: FloatArray = np.full(self._alphas.size, np.nan)
        self._ring_len = 1
        self._ring: FloatArray = np.full((1, self._alphas.size), np.nan)
        self._errors: dict[int, FloatArray] = {}

    def _ensure_ring(self) -> None:
        need = max(self._tracker.horizons, default=1) + 1
        if need > self._ring_len:
            ring = np.full((need, self._alphas.size), np.nan)
            self._ring, self._ring_len = ring, need

    def _update(self, k: int, y: float) -> None:
        self._ensure_ring()
        if math.isfinite(y):
            for h in self._tracker.horizons:
                past = self._ring[(k - h) % self._ring_len]
                if np.all(np.isfinite(past)):
                    err = np.abs(y - past)
                    prev = self._errors.get(h)
                    self._errors[h] = err if prev is None else prev + 0.02 * (err - prev)
            first = ~np.isfinite(self._levels)
            self._levels = np.where(first, y, self._levels + self._alphas * (y - self._levels))
        self._ring[k % self._ring_len] = self._levels

    def _best(self, h: int) -> int:
        if not self._errors:
            return int(np.argmin(np.abs(self._alphas - 0.3)))
        key = min(self._errors, key=lambda x: (abs(x - h), x))
        return int(np.argmin(self._errors[key]))

    def _point(self, h: int) -> float:
        return float(self._levels[self._best(h)])

    def _on_level_shift(self, k: int) -> None:
        level = self._recent_level()
        if math.isfinite(level):
            self._levels[:] = level
            self._ring[:] = np.nan


class Holt(GridForecaster):
    """Damped-trend Holt smoothing: ``l = a*y + (1-a)(l + phi*b)``, ``b = beta(l - l') + (1-beta)phi*b``.

    The h-step forecast is ``l + (phi + ... + phi^h) b``. Missing steps advance the state without
    correction. A level shift resets the level to the recent median and the trend to zero.
    """

    name = "holt"

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.05, phi: float = 0.9, **kwargs: Any) -> None:
        for field, v in (("alpha", alpha), ("beta", beta), ("phi", phi)):
            if not 0 <= v <= 1:
                raise ValueError(f"holt {field} must be in [0, 1], got {v!r}")
        kwargs.setdefault("min_history_steps", 2)
        super().__init__(**kwargs)
        self.alpha, self.beta, self.phi = alpha, beta, phi
        self._level = math.nan
        self._trend = 0.0

    def _update(self, k: int, y: float) -> None:
        if not math.isfinite(self._level):
            if math.isfinite(y):
                self._level = y
            return
        prior = self._level + self.phi * self._trend
        if math.isfinite(y):
            new_level = self.alpha * y + (1 - self.alpha) * prior
            self._trend = self.beta * (new_level - self._level) + (1 - self.beta) * self.phi * self._trend
            self._level = new_level
        else:
            self._level = prior
            self._trend *= self.phi

    def _point(self, h: int) -> float:
        damp = float(h) if self.phi == 1.0 else self.phi * (1 - self.phi**h) / (1 - self.phi)
        return self._level + damp * self._trend

    def _on_level_shift(self, k: int) -> None:
        level = self._recent_level()
        if math.isfinite(level):
            self._level, self._trend = level, 0.0
