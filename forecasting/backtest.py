"""Walk-forward backtests: feed a series step by step, forecast from the past only, score afterwards."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pdscale.forecasting.base import Forecaster
from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.metrics import coverage, mase, naive_scale, pinball, smape

__all__ = ["BacktestResult", "ModelScore", "backtest", "score"]


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Forecasts made at each origin ``i`` (after observing ``values[i]``) for ``values[i + h]``."""

    model: str
    horizon_steps: int
    actual: FloatArray
    """``actual[i]`` is the outcome the forecast made at origin ``i`` targets (NaN past the end)."""
    mean: FloatArray
    quantiles: dict[float, FloatArray]
    fit_s: float
    """Wall-clock seconds spent in ``observe`` and ``predict`` over the run (fits included)."""
    step_s_p50_ms: float
    step_s_p99_ms: float


@dataclass(frozen=True, slots=True)
class ModelScore:
    """Accuracy of one backtest; see docs/forecasting.md for the definitions."""

    mase: float
    smape: float
    pinball: float
    p90_coverage: float
    fit_s: float

    def as_dict(self) -> dict[str, float | None]:
        """JSON-friendly (NaN becomes None)."""
        return {
            k: (None if not math.isfinite(v) else round(v, 6))
            for k, v in (
                ("mase", self.mase),
                ("smape", self.smape),
                ("pinball", self.pinball),
                ("p90_coverage", self.p90_coverage),
                ("fit_s", self.fit_s),
            )
        }


def backtest(
    forecaster: Forecaster,
    t_s: FloatArray,
    values: FloatArray,
    *,
    horizon_s: float,
    step_s: float,
    drivers: tuple[FloatArray, FloatArray] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> BacktestResult:
    """Walk forward over ``(t_s, values)``: at each ``i`` observe ``values[i]`` (and ``drivers`` — request
    rate and decode seconds — when the forecaster takes them), then predict ``horizon_s`` ahead. Only
    ``values[: i + 1]`` has been seen when the forecast at origin ``i`` is made.
    """
    t = np.asarray(t_s, dtype=float)
    y = np.asarray(values, dtype=float)
    if t.shape != y.shape:
        raise ValueError("t_s and values must have the same length")
    h = max(1, math.ceil(horizon_s / step_s - 1e-9))
    n = y.size
    mean = np.full(n, np.nan)
    qs: dict[float, FloatArray] = {}
    durations = np.zeros(n)
    observe_drivers = getattr(forecaster, "observe_drivers", None) if drivers is not None else None
    for i in range(n):
        start = time.perf_counter()
        if observe_drivers is not None and drivers is not None:
            observe_drivers(float(t[i]), float(drivers[0][i]), float(drivers[1][i]))
        forecaster.observe(float(t[i]), float(y[i]))
        fc = forecaster.predict(horizon_s)
        durations[i] = time.perf_counter() - start
        mean[i] = fc.mean
        for q, v in fc.quantiles.items():
            qs.setdefault(q, np.full(n, np.nan))[i] = v
        if on_step is not None:
            on_step(i)
    actual = np.full(n, np.nan)
    actual[: max(0, n - h)] = y[h:]
    return BacktestResult(
        model=forecaster.name,
        horizon_steps=h,
        actual=actual,
        mean=mean,
        quantiles=qs,
        fit_s=float(durations.sum()),
        step_s_p50_ms=float(np.percentile(durations, 50) * 1000) if n else math.nan,
        step_s_p99_ms=float(np.percentile(durations, 99) * 1000) if n else math.nan,
    )


def score(result: BacktestResult, values: FloatArray, *, warmup_steps: int = 0) -> ModelScore:
    """Scores the forecasts from origin ``warmup_steps`` on. MASE is scaled by the one-step naive MAE
    of the whole series (``naive_scale``), so MASE ratios between models equal their MAE ratios."""
    sl = slice(warmup_steps, None)
    a = result.actual[sl]
    p90 = result.quantiles.get(0.9, result.mean)[sl]
    return ModelScore(
        mase=mase(a, result.mean[sl], naive_scale(values)),
        smape=smape(a, result.mean[sl]),
        pinball=pinball(a, {q: v[sl] for q, v in result.quantiles.items()}),
        p90_coverage=coverage(a, p90),
        fit_s=result.fit_s,
    )
