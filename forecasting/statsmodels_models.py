"""Holt-Winters and ARIMA fitted with statsmodels on a capped window, refitted every N steps.

Fits are bounded (at most ``max_fit_steps`` of history) and amortised (every ``refit_every_steps``
steps, inline on the closing step): between refits Holt-Winters and ARIMA run their own O(1) recursions
with the fitted parameters (microseconds a step). A model that
cannot be fitted (short history, numerical failure) forecasts with a damped Holt instead and says so
in ``Forecast.note`` and a ``forecast_fit_failed`` event.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from pdscale.forecasting.fitting import FitJob
from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.smoothing import Holt
from pdscale.forecasting.threads import single_thread

__all__ = ["Arima", "HoltWinters", "fit_arima", "fit_holt_winters"]

log = structlog.get_logger(__name__)


def _fill_gaps(y: FloatArray) -> FloatArray:
    """Linear interpolation over NaN steps (edges take the nearest value)."""
    ok = np.isfinite(y)
    if ok.all():
        return y
    idx = np.arange(y.size)
    return np.interp(idx, idx[ok], y[ok])


class _FittedModel(GridForecaster):
    """Common refit schedule, background fits and Holt fallback.

    A due fit copies its window and hands ``_compute`` (pure: it reads only its arguments) to the fitter; the
    result is applied by ``_apply`` on this model's thread (at once with the inline fitter, at a later step with
    the background one), after which the model advances through the steps that closed since the window ended.
    """

    def __init__(
        self,
        *,
        refit_every_steps: int | None = None,
        max_fit_steps: int = 720,
        min_fit_steps: int = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # every hour at minute steps, every 15 minutes at second steps
        self.refit_every_steps = refit_every_steps or max(60, round(900.0 / self.step_s))
        self.max_fit_steps = max_fit_steps
        self.min_fit_steps = min_fit_steps
        fb_kwargs = {k: v for k, v in kwargs.items() if k in ("step_s", "season_s", "history_s")}
        self._fallback = Holt(
            detect_level_shifts=False,
            horizons_s=(),
            history_s=8 * self.step_s,
            **{k: v for k, v in fb_kwargs.items() if k != "history_s"},
        )
        self._fitted = False
        self._since_fit = 0
        self._fit_from: int | None = None
        self._job: tuple[FitJob[tuple[Any, float]], int, int] | None = None
        self._generation = 0
        self._failed_at: int | None = None
        self.fit_seconds = 0.0
        self.n_fits = 0

    def _model_ready(self) -> bool:
        return self._fitted

    def _update(self, k: int, y: float) -> None:
        self._fallback.observe(k * self.step_s, y)
        self._since_fit += 1
        self._collect(k)
        if self._fitted:
            self._advance(k, y)
        available = self._grid.n_closed if self._fit_from is None else k - self._fit_from + 1
        retry_ok = self._failed_at is None or k - self._failed_at >= self.refit_every_steps
        due = (not self._fitted and retry_ok) or self._since_fit >= self.refit_every_steps
        if self._job is None and due and available >= self._needed():
            window = _fill_gaps(self._grid.recent(min(available, self.max_fit_steps)))
            fn, args = self._fit_task(window, k)
            self._job = (self.fitter.submit(_timed, fn, args), k, self._generation)
            self._since_fit = 0
            self._collect(k + 1)  # an inline fit applies now, with the state as of step k
        elif not self._fitted and self._job is None and not self._note.startswith("fit failed"):
            self._note = f"short history ({available} of {self._needed()} steps); using holt"

    def _collect(self, k: int) -> None:
        """Apply a finished fit, then advance through the steps after its window up to (not including) ``k``."""
        if self._job is None or not self._job[0].done():
            return
        job, k_fit, generation = self._job
        self._job = None
        try:
            result, seconds = job.result()
        except Exception as exc:  # statsmodels raises many types; all mean "no fit"
            self.n_fits += 1
            self._fitted = False
            self._failed_at = k_fit  # retried on the refit schedule, not on every step
            self._note = f"fit failed ({type(exc).__name__}: {exc}); using holt"
            log.warning("forecast_fit_failed", model=self.name, step=k_fit, error=str(exc), fallback="holt")
            return
        self.n_fits += 1
        self.fit_seconds += seconds
        if generation != self._generation:
            return  # fitted before a level shift: stale
        self._apply(result, k_fit)
        self._fitted, self._note, self._failed_at = True, "", None
        if k - 1 > k_fit:
            for j, y in enumerate(self._grid.recent(k - k_fit)[: k - 1 - k_fit], start=k_fit + 1):
                self._advance(j, float(y))

    def _on_level_shift(self, k: int) -> None:
        self._fallback._on_level_shift(k)  # the fallback is owned and fed by this model
        self._fit_from = k - self._detector_recent() + 1
        self._fitted = False
        self._generation += 1
        self._note = "level shift; using holt until refitted"

    def _detector_recent(self) -> int:
        return self._detector.recent if self._detector is not None else 1

    def _point(self, h: int) -> float:
        if not self._fitted:
            return self._fallback.point(h)
        return self._model_point(h)

    def _needed(self) -> int:
        return self.min_fit_steps

    def _fit_task(self, y: FloatArray, k: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """A module-level function and its arguments that fit on ``y`` (the window ending at step ``k``): pure,
        picklable, so it may run on the fit thread or in the fit process."""
        raise NotImplementedError

    def _apply(self, result: Any, k: int) -> None:
        """Take a fit computed on the window ending at step ``k`` (this model's thread)."""
        raise NotImplementedError

    def _advance(self, k: int, y: float) -> None:
        raise NotImplementedError

    def _model_point(self, h: int) -> float:
        raise NotImplementedError


def _timed(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, float]:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True), single_thread():
        warnings.simplefilter("ignore")
        result = fn(*args)
    return result, time.perf_counter() - start


class HoltWinters(_FittedModel):
    """Additive damped Holt-Winters with daily (``season_s``) seasonality (statsmodels ExponentialSmoothing).

    Needs two seasons of history (``2 * season_s``); fits on at most ``max_fit_steps`` (default three
    seasons) with heuristic initialisation, refits every ``refit_every_steps`` (default a quarter season).
    """

    name = "holt_winters"

    def __init__(self, **kwargs: Any) -> None:
        step_s = float(kwargs.get("step_s", 60.0))
        season = max(1, round(float(kwargs.get("season_s", 86400.0)) / step_s))
        kwargs.setdefault("max_fit_steps", 3 * season)
        kwargs.setdefault("refit_every_steps", max(1, season // 4))
        super().__init__(**kwargs)
        self._params = (0.0, 0.0, 0.0, 1.0)
        self._level = 0.0
        self._trend = 0.0
        self._season: FloatArray = np.zeros(self.season_steps)

    def _needed(self) -> int:
        return max(self.min_fit_steps, 2 * self.season_steps + 1)

    def _fit_task(self, y: FloatArray, k: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return fit_holt_winters, (y, k, self.season_steps)

    def _apply(self, result: Any, k: int) -> None:
        self._params, self._level, self._trend, self._season = result

    def _advance(self, k: int, y: float) -> None:
        a, b, g, phi = self._params
        s_old = float(self._season[k % self.season_steps])
        prior = self._level + phi * self._trend
        if math.isfinite(y):
            level = a * (y - s_old) + (1 - a) * prior
            self._season[k % self.season_steps] = g * (y - prior) + (1 - g) * s_old
            self._trend = b * (level - self._level) + (1 - b) * phi * self._trend
            self._level = level
        else:
            self._level, self._trend = prior, phi * self._trend

    def _model_point(self, h: int) -> float:
        phi = self._params[3]
        damp = float(h) if phi == 1.0 else phi * (1 - phi**h) / (1 - phi)
        last = self._grid.last_closed
        assert last is not None
        return self._level + damp * self._trend + float(self._season[(last + h) % self.season_steps])

    def _on_level_shift(self, k: int) -> None:
        level = self._recent_level()
        if self._fitted and math.isfinite(level):
            # keep the daily shape, move the level: the seasonal state is still valid after an outage
            recent = self._grid.recent(4)
            idx = np.arange(k - recent.size + 1, k + 1) % self.season_steps
            shape = self._season[idx][np.isfinite(recent)]
            self._level = level - (float(np.median(shape)) if shape.size else 0.0)
            self._trend = 0.0
            self._note = ""
            return
        super()._on_level_shift(k)


class Arima(_FittedModel):
    """ARIMA(p, d, q) fitted with statsmodels SARIMAX on the newest ``max_fit_steps`` steps.

    Daily seasonality is too long a lag for a state-space fit at minute steps, so this is the plain
    (non-seasonal) model; seasonality is covered by Holt-Winters, seasonal naive and the quantile model.
    Between refits the fitted coefficients run in an O(p + q + d) innovations recursion of pdscale's own
    (the filter's steady state: the fit's last residuals seed the innovations), and the forecast path for
    every horizon is computed once per step in O(h); statsmodels' ``extend`` + ``forecast`` cost
    milliseconds per step, this costs microseconds. A missing step advances on the model's own forecast.
    """

    name = "arima"

    def __init__(self, *, order: tuple[int, int, int] = (2, 1, 1), **kwargs: Any) -> None:
        kwargs.setdefault("min_fit_steps", 30)
        super().__init__(**kwargs)
        p, d, q = order
        if min(p, d, q) < 0 or d > 2:
            raise ValueError(f"arima order must be (p >= 0, d in 0..2, q >= 0), got {order!r}")
        self.order = order
        self._ar: FloatArray = np.zeros(p)
        self._ma: FloatArray = np.zeros(q)
        self._w: FloatArray = np.zeros(p)  # newest first: the last p differenced values
        self._eps: FloatArray = np.zeros(q)  # newest first: the last q innovations
        self._levels: FloatArray = np.zeros(d)  # newest first: the last d observed (or filled) levels
        self._path: FloatArray = np.empty(0)

    def _fit_task(self, y: FloatArray, k: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return fit_arima, (y, self.order)

    def _apply(self, result: Any, k: int) -> None:
        self._ar, self._ma, self._w, self._eps, self._levels = result
        self._path = np.empty(0)

    def _one_step(self) -> float:
        """The differenced series' next value given the state (future innovations are zero)."""
        return float(self._ar @ self._w) + float(self._ma @ self._eps)

    def _integrate(self, w: float, levels: FloatArray) -> float:
        d = self.order[1]
        if d == 0:
            return w
        if d == 1:
            return w + float(levels[0])
        return w + 2.0 * float(levels[0]) - float(levels[1])

    def _advance(self, k: int, y: float) -> None:
        w_hat = self._one_step()
        d = self.order[1]
        if math.isfinite(y):
            w = y if d == 0 else (y - float(self._levels[0]) if d == 1 else y - 2 * self._levels[0] + self._levels[1])
            eps = float(w) - w_hat
        else:
            w, eps = w_hat, 0.0
            y = self._integrate(w_hat, self._levels)
        if self._w.size:
            self._w = np.concatenate(([w], self._w[:-1]))
        if self._eps.size:
            self._eps = np.concatenate(([eps], self._eps[:-1]))
        if self._levels.size:
            self._levels = np.concatenate(([y], self._levels[:-1]))
        self._path = np.empty(0)

    def _model_point(self, h: int) -> float:
        if self._path.size < h:
            horizon = max(h, max(self._tracker.horizons, default=1))
            w, eps, levels = self._w.copy(), self._eps.copy(), self._levels.copy()
            path = np.empty(horizon)
            for j in range(horizon):
                w_next = float(self._ar @ w) + float(self._ma @ eps)
                y_next = self._integrate(w_next, levels)
                path[j] = y_next
                if w.size:
                    w = np.concatenate(([w_next], w[:-1]))
                if eps.size:
                    eps = np.concatenate(([0.0], eps[:-1]))
                if levels.size:
                    levels = np.concatenate(([y_next], levels[:-1]))
            self._path = path
        return float(self._path[h - 1])


def fit_holt_winters(y: FloatArray, k: int, season_steps: int) -> Any:
    """Additive damped Holt-Winters on ``y`` (ending at step ``k``): smoothing parameters, level, trend and the
    seasonal state indexed by step modulo ``season_steps``."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # noqa: PLC0415 - heavy, load on first fit

    s = season_steps
    res = ExponentialSmoothing(
        y,
        trend="add",
        damped_trend=True,
        seasonal="add",
        seasonal_periods=s,
        initialization_method="heuristic",
    ).fit()
    p = res.params
    params = (
        float(p["smoothing_level"]),
        float(p["smoothing_trend"]),
        float(p["smoothing_seasonal"]),
        float(p["damping_trend"]),
    )
    if not all(math.isfinite(v) for v in params):
        raise ValueError("non-finite smoothing parameters")
    season = np.zeros(s)
    season[np.arange(k - s + 1, k + 1) % s] = np.asarray(res.season, dtype=float)[-s:]
    return params, float(res.level[-1]), float(res.trend[-1]), season


def fit_arima(y: FloatArray, order: tuple[int, int, int]) -> Any:
    """ARIMA ``order`` on ``y`` with statsmodels SARIMAX: AR and MA coefficients and the recursion's seed state
    (newest first: the last p differenced values, q residuals and d levels)."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # noqa: PLC0415 - heavy, load on first fit

    p, d, q = order
    res = SARIMAX(y, order=order).fit(disp=False)
    ar, ma = np.asarray(res.arparams, dtype=float), np.asarray(res.maparams, dtype=float)
    resid = np.asarray(res.resid, dtype=float)
    if not (np.all(np.isfinite(ar)) and np.all(np.isfinite(ma)) and np.all(np.isfinite(resid[-max(q, 1) :]))):
        raise ValueError("non-finite ARIMA parameters")
    w = np.diff(y, n=d) if d else y
    if w.size < p or resid.size < q:
        raise ValueError("too few steps for the ARIMA order")
    return ar, ma, w[::-1][:p].copy(), resid[::-1][:q].copy(), y[::-1][:d].copy()
