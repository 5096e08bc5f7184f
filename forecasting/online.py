"""Shared machinery of every grid forecaster: resampling, conformal quantiles, level shifts, fallbacks."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque

import numpy as np
import structlog

from pdscale.forecasting.base import DEFAULT_QUANTILES, Forecast
from pdscale.forecasting.conformal import ResidualTracker
from pdscale.forecasting.fitting import FitMode, Fitter, fitter_for
from pdscale.forecasting.grid import FloatArray, StepGrid
from pdscale.forecasting.level_shift import LevelShiftDetector

__all__ = ["GridForecaster"]

log = structlog.get_logger(__name__)


class GridForecaster(ABC):
    """Base of the built-in forecasters.

    ``observe`` resamples samples onto a ring buffer of ``history_s / step_s`` steps (gaps stay NaN);
    each closed step is passed to ``_update`` (O(1) in the simple models), scored against the forecasts
    made ``h`` steps earlier for every tracked horizon, and checked for a level shift (``_on_level_shift``).
    ``predict`` turns ``_point(h)`` into a Forecast whose quantiles come from ``_native_quantiles`` or from
    the empirical horizon-ahead residuals (conformal style). A point model that cannot forecast (NaN or an
    exception) falls back to the last value and says so in ``note`` and a ``forecast_fallback`` event.
    """

    name = "grid"

    def __init__(
        self,
        *,
        step_s: float = 60.0,
        season_s: float = 86400.0,
        history_s: float = 14 * 86400.0,
        horizons_s: tuple[float, ...] = (300.0, 1800.0),
        quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
        residual_window: int = 400,
        min_history_steps: int = 3,
        detect_level_shifts: bool = True,
        fits: FitMode | str = FitMode.INLINE,
    ) -> None:
        for q in (0.5, 0.9, 0.99):
            if q not in quantiles:
                quantiles = (*quantiles, q)
        if not (math.isfinite(season_s) and season_s > 0):
            raise ValueError(f"season_s must be a positive number of seconds, got {season_s!r}")
        self.step_s = float(step_s)
        self.season_s = float(season_s)
        self.season_steps = max(1, round(season_s / step_s))
        self.quantile_levels = tuple(sorted(set(quantiles)))
        self.min_history_steps = min_history_steps
        self.fits = FitMode(fits)
        self.fitter: Fitter = fitter_for(self.fits)
        self._grid = StepGrid(step_s, max(8, math.ceil(history_s / step_s)))
        self._tracker = ResidualTracker(window=residual_window)
        self._detector = LevelShiftDetector() if detect_level_shifts else None
        self._n_finite = 0
        self._shift_at: int | None = None
        self._shift_dropped = 0
        self._cache: dict[int, float] = {}
        self._note = ""
        self._abs_diffs: deque[float] = deque(maxlen=120)
        self._sigma1_cache: float | None = None
        self._prev = math.nan
        for hs in horizons_s:
            self._tracker.track(self._steps(hs))

    # -- public API ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Enough history for this model's own forecast (not a fallback)."""
        return self._n_finite >= self.min_history_steps and self._model_ready()

    @property
    def last_step(self) -> int | None:
        """Index of the newest closed step."""
        return self._grid.last_closed

    def observe(self, t: float, value: float | None) -> None:
        """A sample at ``t`` seconds; None or NaN is missing (never zero)."""
        v = self._validated(t, value)
        for k, y in self._grid.add(t, v):
            self._close(k, y)

    def _validated(self, t: float, value: float | None) -> float:
        if not math.isfinite(t):
            raise ValueError(f"{self.name}: observation time must be finite, got {t!r}")
        v = math.nan if value is None else float(value)
        if v < 0 or v == math.inf:
            raise ValueError(f"{self.name}: observed value must be >= 0 and finite (or NaN/None), got {value!r}")
        return v

    def predict(self, horizon_s: float) -> Forecast:
        """Forecast of the step that contains ``last observation + horizon_s``."""
        if not (math.isfinite(horizon_s) and horizon_s >= 0):
            raise ValueError(f"{self.name}: horizon_s must be >= 0, got {horizon_s!r}")
        h = self._horizon_steps(horizon_s)
        if self._grid.last_closed is None or self._n_finite == 0:
            return Forecast(0.0, dict.fromkeys(self.quantile_levels, 0.0), False, self.name, horizon_s, "no data")
        point = self.point(h)
        native = self._native_quantiles(h) if self._note == "" else None
        if native is not None:
            qs = dict(native)
        else:
            qs = self._tracker.quantiles(point, h, self.quantile_levels, self._sigma1())
        running = 0.0
        for q in sorted(qs):
            running = max(running, qs[q] if math.isfinite(qs[q]) else point)
            qs[q] = running
        return Forecast(point, qs, self.ready, self.name, horizon_s, self._note or self._band_note(h))

    def point(self, h: int) -> float:
        """Point forecast ``h`` steps after the newest closed step (>= 0, cached per step)."""
        if h in self._cache:
            return self._cache[h]
        note = ""
        try:
            p = self._point(h)
        except Exception as exc:  # any model failure falls back, and is reported
            p, note = math.nan, f"{type(exc).__name__}: {exc}"
        if not math.isfinite(p):
            p = self._grid.last_finite()
            p = 0.0 if not math.isfinite(p) else p
            note = note or "model gave no forecast"
            if self._note != note:
                # Expected while history is short (every model starts this way): only a ready model's failure warns.
                emit = log.warning if self.ready else log.debug
                emit("forecast_fallback", model=self.name, fallback="last_value", reason=note)
            self._note = f"fallback to last_value: {note}"
        elif self._note.startswith("fallback to last_value"):
            self._note = ""
        p = max(0.0, p)
        self._cache[h] = p
        return p

    # -- hooks --------------------------------------------------------------------------------------
    @abstractmethod
    def _update(self, k: int, y: float) -> None:
        """A step closed with value ``y`` (NaN = missing)."""

    @abstractmethod
    def _point(self, h: int) -> float:
        """Point forecast ``h`` steps ahead; NaN if the model cannot say."""

    def _model_ready(self) -> bool:
        return True

    def _on_level_shift(self, k: int) -> None:  # noqa: B027 - optional hook, a no-op by default
        """A level shift ended at step ``k``; simple models reset their level."""

    def _native_quantiles(self, h: int) -> dict[float, float] | None:
        return None

    # -- helpers ------------------------------------------------------------------------------------
    def _steps(self, horizon_s: float) -> int:
        return max(1, math.ceil(horizon_s / self.step_s - 1e-9))

    def _horizon_steps(self, horizon_s: float) -> int:
        last = self._grid.last_closed
        if last is None or self._grid.last_t is None:
            return self._steps(horizon_s)
        target = self._grid.step_index(self._grid.last_t + horizon_s)
        h = max(1, target - last)
        self._tracker.track(h)
        return h

    def _close(self, k: int, y: float) -> None:
        self._cache = {}
        self._tracker.resolve(k, y)
        if math.isfinite(y):
            self._n_finite += 1
            if math.isfinite(self._prev):
                self._abs_diffs.append(abs(y - self._prev))
                self._sigma1_cache = None
            self._prev = y
        self._update(k, y)
        if self._detector is not None and self._detector.update(y):
            self._shift_at = k
            dropped = self._tracker.forget_shift(k, 2 * self._detector.recent)
            self._shift_dropped = dropped
            log.info("level_shift_detected", model=self.name, step=k, value=y, residuals_dropped=dropped)
            self._on_level_shift(k)
            self._cache = {}
        for h in self._tracker.horizons:
            self._tracker.record(k, h, self.point(h))

    def _band_note(self, h: int) -> str:
        """While the band at ``h`` still rests on residuals from before a level shift: what the shift dropped."""
        last = self._grid.last_closed
        if self._shift_at is None or last is None or not self._shift_dropped:
            return ""
        since = last - self._shift_at
        scored = self._tracker.scored_since(h, self._shift_at)
        if scored >= self._tracker.min_residuals:
            self._shift_dropped = 0  # the band is the new level's own: nothing left to say (nor to count)
            return ""
        return (
            f"band restarted by a level shift {since} steps ago: {self._shift_dropped} residuals across it "
            f"dropped, {scored} scored since"
        )

    def _sigma1(self) -> float:
        """One-step noise scale for the normal band used before residuals exist: the median absolute one-step
        change of the newest 120 steps (a start-up transient or one outlier does not widen the band for hours),
        scaled to a standard deviation (median |d| = 0.6745 sd(d) for normal changes, sd(d) = sqrt(2) sigma)."""
        if not self._abs_diffs:
            return 0.0
        if self._sigma1_cache is None:  # once per closed step
            diffs = sorted(self._abs_diffs)
            n, mid = len(diffs), len(diffs) // 2
            median = diffs[mid] if n % 2 else (diffs[mid - 1] + diffs[mid]) / 2.0
            self._sigma1_cache = median / 0.6745 / math.sqrt(2)
        return self._sigma1_cache

    def _recent(self, n: int) -> FloatArray:
        return self._grid.recent(n)

    def _recent_level(self, n: int = 4) -> float:
        vals = self._grid.recent(n)
        vals = vals[np.isfinite(vals)]
        return float(np.median(vals)) if vals.size else math.nan
