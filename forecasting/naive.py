"""Naive baselines: the last value, and the value one season (week or day) earlier."""

from __future__ import annotations

import math
from typing import Any

from pdscale.forecasting.online import GridForecaster

__all__ = ["LastValue", "SeasonalNaive"]


class LastValue(GridForecaster):
    """Forecasts the newest finite step value for every horizon."""

    name = "last_value"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_history_steps", 1)
        super().__init__(**kwargs)
        self._last = math.nan

    def _update(self, k: int, y: float) -> None:
        if math.isfinite(y):
            self._last = y

    def _point(self, h: int) -> float:
        return self._last


class SeasonalNaive(GridForecaster):
    """Forecasts the value one season before the target step.

    Tries a weekly season first (when ``weekly`` and a week of history is held) and then the daily
    one (``season_s``), going back whole seasons past missing steps. With less than a season of
    history it is not ready and forecasts the last value.
    """

    name = "seasonal_naive"

    def __init__(self, *, weekly: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weekly = weekly
        self._last = math.nan

    def _seasons(self) -> list[int]:
        seasons = []
        week = round(7 * 86400.0 / self.step_s)
        if self.weekly and week != self.season_steps and self._grid.n_closed >= week:
            seasons.append(week)
        seasons.append(self.season_steps)
        return seasons

    def _model_ready(self) -> bool:
        return self._grid.n_closed >= self.season_steps

    def _update(self, k: int, y: float) -> None:
        if math.isfinite(y):
            self._last = y

    def _point(self, h: int) -> float:
        last = self._grid.last_closed
        if last is None:
            return math.nan
        target = last + h
        for s in self._seasons():
            lag = s * max(1, math.ceil(h / s))
            while lag < self._grid.n_closed + h:
                v = self._grid.value_at(target - lag)
                if math.isfinite(v):
                    return v
                lag += s
        return self._last
