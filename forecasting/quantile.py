"""Direct quantile forecasts from lag, level and time-of-day features (scikit-learn gradient boosting)."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from pdscale.forecasting.fitting import FitJob
from pdscale.forecasting.forest import Forest
from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.smoothing import Ewma
from pdscale.forecasting.threads import single_thread

__all__ = ["QuantileGbm", "lag_features"]

log = structlog.get_logger(__name__)

N_LAGS = 6
LEVEL_STEPS = 12
LONG_STEPS = 60


def _trailing_mean(y: FloatArray, n: int) -> FloatArray:
    """Mean of the finite values among ``y[i-n+1..i]`` for every ``i`` (NaN if none)."""
    ok = np.isfinite(y)
    c = np.concatenate(([0.0], np.cumsum(np.where(ok, y, 0.0))))
    m = np.concatenate(([0], np.cumsum(ok)))
    idx = np.arange(y.size)
    lo = np.maximum(idx - n + 1, 0)
    cnt = m[idx + 1] - m[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (c[idx + 1] - c[lo]) / cnt
    return np.where(cnt > 0, out, np.nan)


def _shift(y: FloatArray, lag: int) -> FloatArray:
    """``y[i - lag]`` (NaN outside the array); negative lags look forward."""
    out = np.full(y.size, np.nan)
    if lag >= 0:
        if lag < y.size:
            out[lag:] = y[: y.size - lag]
    elif -lag < y.size:
        out[:lag] = y[-lag:]
    return out


def lag_features(y: FloatArray, first_index: int, h: int, season_steps: int) -> tuple[FloatArray, FloatArray]:
    """Features for forecasting ``y[i + h]`` from ``y[..i]`` at every origin ``i``, and the level they are
    relative to. ``first_index`` is the absolute step index of ``y[0]`` (for the time of day).

    Features (all level-relative, so a model trained at one traffic level transfers to another):
    the last ``N_LAGS`` values, the long trailing mean, the value one season before the target and the
    seasonal change (target season value minus the season value at the origin), the level's log, and
    the target's time of day as sine and cosine. NaN marks a missing input (the model handles it).
    """
    level = _trailing_mean(y, LEVEL_STEPS)
    cols = [_shift(y, j) - level for j in range(N_LAGS)]
    cols.append(_trailing_mean(y, LONG_STEPS) - level)
    season_target = _shift(y, season_steps - h)
    cols.append(season_target - level)
    cols.append(season_target - _trailing_mean(_shift(y, season_steps), 3))
    cols.append(np.log1p(np.maximum(level, 0.0)))
    phase = 2 * np.pi * ((np.arange(y.size) + first_index + h) % season_steps) / season_steps
    cols.extend([np.sin(phase), np.cos(phase)])
    return np.column_stack(cols), level


def _boost(x: FloatArray, target: FloatArray, levels: tuple[float, ...], max_iter: int) -> tuple[Forest, float]:
    """One quantile-loss gradient-boosting model per level, flattened for one-row scoring (pure: may run on the
    fit thread)."""
    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: PLC0415 - heavy, load on first fit

    start = time.perf_counter()
    models: dict[float, Any] = {}
    # One thread: a control plane's refit must not take every core (and OpenMP's spinning threads collapse
    # when several processes fit at once).
    with warnings.catch_warnings(record=True), single_thread():
        for q in levels:
            m = HistGradientBoostingRegressor(
                loss="quantile",
                quantile=q,
                max_iter=max_iter,
                max_leaf_nodes=15,
                min_samples_leaf=20,
                learning_rate=0.1,
                random_state=0,
            )
            models[q] = m.fit(x, target)
    return Forest.from_models(models), time.perf_counter() - start


class QuantileGbm(GridForecaster):
    """One ``HistGradientBoostingRegressor(loss="quantile")`` per quantile and horizon, trained on the
    newest ``max_train_steps`` steps and refitted every ``refit_every_steps``. Its quantiles are its
    own (not conformal); the mean is its median. Until ``min_train_rows`` rows exist it forecasts with
    an EWMA and says so in the note.
    """

    name = "quantile_gbm"

    def __init__(
        self,
        *,
        refit_every_steps: int | None = None,
        max_train_steps: int = 2880,
        min_train_rows: int = 120,
        max_iter: int = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # every 4 hours at minute steps, every 15 minutes at second steps
        self.refit_every_steps = refit_every_steps or max(240, round(900.0 / self.step_s))
        self.max_train_steps = max_train_steps
        self.min_train_rows = min_train_rows
        self.max_iter = max_iter
        self._fallback = Ewma(detect_level_shifts=False, horizons_s=(), step_s=self.step_s, history_s=8 * self.step_s)
        self._models: dict[int, Forest] = {}
        self._fitted_at: dict[int, int] = {}
        self._columns: dict[int, npt.NDArray[np.bool_]] = {}
        self._pred_cache: dict[int, dict[float, float]] = {}
        self._jobs: dict[int, tuple[FitJob[tuple[Forest, float]], int, npt.NDArray[np.bool_]]] = {}
        self.fit_seconds = 0.0
        self.n_fits = 0

    def _model_ready(self) -> bool:
        return bool(self._models)

    def _update(self, k: int, y: float) -> None:
        self._fallback.observe(k * self.step_s, y)
        self._pred_cache = {}
        self._collect()
        for h in self._tracker.horizons:
            last = self._fitted_at.get(h)
            if h not in self._jobs and (last is None or k - last >= self.refit_every_steps):
                self._fit(h, k)
        self._collect()

    def _fit(self, h: int, k: int) -> None:
        """Build the training rows here (O(window)); the boosting itself runs on the fitter."""
        y = self._grid.recent(self.max_train_steps + h)
        if y.size < h + LEVEL_STEPS + self.min_train_rows // 2:
            self._note = "short history; using ewma"
            return
        x, level = lag_features(y, k - y.size + 1, h, self.season_steps)
        target = _shift(y, -h) - level
        rows = np.isfinite(target) & np.isfinite(level)
        if int(rows.sum()) < self.min_train_rows:
            self._note = "short history; using ewma"
            return
        self._fitted_at[h] = k  # a failing fit is retried after refit_every_steps, not every step
        cols: npt.NDArray[np.bool_] = np.asarray(
            np.isfinite(x[rows]).any(axis=0)
        )  # a column with no value at all cannot be binned
        features, targets = x[rows][:, cols], target[rows]
        levels, max_iter = self.quantile_levels, self.max_iter
        self._jobs[h] = (self.fitter.submit(_boost, features, targets, levels, max_iter), k, cols)

    def _collect(self) -> None:
        """Take the fits that finished (all of them with the inline fitter)."""
        for h, (job, k, cols) in list(self._jobs.items()):
            if not job.done():
                continue
            del self._jobs[h]
            self.n_fits += 1
            try:
                models, seconds = job.result()
            except Exception as exc:  # a failed fit keeps the previous model or the fallback
                self._note = f"fit failed ({type(exc).__name__}: {exc}); using ewma"
                log.warning("forecast_fit_failed", model=self.name, step=k, error=str(exc), fallback="ewma")
                continue
            self.fit_seconds += seconds
            self._models[h], self._columns[h] = models, cols
            self._pred_cache.pop(h, None)
            self._note = ""

    def _row(self, h: int) -> tuple[FloatArray, float]:
        """The feature row of ``lag_features`` at the newest step, in O(LONG_STEPS) (not O(season))."""
        last = self._grid.last_closed
        assert last is not None
        s = self.season_steps
        y = self._grid.recent(LONG_STEPS)
        lags = np.full(N_LAGS, np.nan)
        lags[: min(N_LAGS, y.size)] = y[::-1][:N_LAGS]
        with warnings.catch_warnings(record=True):
            level = float(np.nanmean(y[-LEVEL_STEPS:])) if np.isfinite(y[-LEVEL_STEPS:]).any() else math.nan
            long_mean = float(np.nanmean(y)) if np.isfinite(y).any() else math.nan
            past = np.array([self._grid.value_at(last - s - j) for j in range(3)])
            past_mean = float(np.nanmean(past)) if np.isfinite(past).any() else math.nan
        season_target = self._grid.value_at(last + h - s)
        phase = 2 * np.pi * ((last + h) % s) / s
        row = [
            *(lags - level),
            long_mean - level,
            season_target - level,
            season_target - past_mean,
            math.log1p(max(level, 0.0)) if math.isfinite(level) else math.nan,
            math.sin(phase),
            math.cos(phase),
        ]
        return np.array([row], dtype=float), level

    def _predict_all(self, h: int) -> dict[float, float] | None:
        """Every quantile level's forecast ``h`` steps ahead (NaN without a level), cached per step."""
        if not self._models:
            return None
        if h not in self._pred_cache:
            key = min(self._models, key=lambda x: (abs(x - h), x))
            x, level = self._row(h)
            preds = self._models[key].predict_row(x[0, self._columns[key]])
            self._pred_cache[h] = {q: level + v for q, v in preds.items()}
        return self._pred_cache[h]

    def _point(self, h: int) -> float:
        out = self._predict_all(h)
        if out is None:
            return self._fallback.point(h)
        return out.get(0.5, math.nan)

    def _native_quantiles(self, h: int) -> dict[float, float] | None:
        out = self._predict_all(h)
        if out is None or not all(math.isfinite(v) for v in out.values()):
            return None
        return {q: max(0.0, v) for q, v in out.items()}
