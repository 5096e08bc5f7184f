"""Forecast accuracy metrics; every function skips pairs where the outcome or forecast is missing."""

from __future__ import annotations

import math

import numpy as np

from pdscale.forecasting.grid import FloatArray

__all__ = ["coverage", "mase", "naive_scale", "pinball", "smape"]


def naive_scale(y: FloatArray) -> float:
    """Mean absolute one-step change of ``y`` over the whole series (finite pairs): the MASE denominator."""
    d = np.abs(np.diff(np.asarray(y, dtype=float)))
    d = d[np.isfinite(d)]
    return float(d.mean()) if d.size else math.nan


def _pairs(actual: FloatArray, forecast: FloatArray) -> tuple[FloatArray, FloatArray]:
    a, f = np.asarray(actual, dtype=float), np.asarray(forecast, dtype=float)
    ok = np.isfinite(a) & np.isfinite(f)
    return a[ok], f[ok]


def mase(actual: FloatArray, forecast: FloatArray, scale: float) -> float:
    """Mean absolute error divided by ``scale`` (see ``naive_scale``); NaN without pairs or scale."""
    a, f = _pairs(actual, forecast)
    if not a.size or not (math.isfinite(scale) and scale > 0):
        return math.nan
    return float(np.mean(np.abs(a - f)) / scale)


def smape(actual: FloatArray, forecast: FloatArray) -> float:
    """Symmetric MAPE in percent (0 to 200): mean of ``2|f - a| / (|a| + |f|)``, counting 0/0 as 0."""
    a, f = _pairs(actual, forecast)
    if not a.size:
        return math.nan
    den = np.abs(a) + np.abs(f)
    terms = np.where(den > 0, 2 * np.abs(f - a) / np.where(den > 0, den, 1.0), 0.0)
    return float(100 * terms.mean())


def pinball(actual: FloatArray, quantiles: dict[float, FloatArray]) -> float:
    """Pinball (quantile) loss averaged over outcomes and then over the quantile levels given."""
    losses = []
    for q, fq in quantiles.items():
        a, f = _pairs(actual, fq)
        if a.size:
            d = a - f
            losses.append(float(np.mean(np.maximum(q * d, (q - 1) * d))))
    return float(np.mean(losses)) if losses else math.nan


def coverage(actual: FloatArray, upper: FloatArray) -> float:
    """Share of outcomes at or below the forecast ``upper`` quantile (p90 -> ideally 0.9)."""
    a, f = _pairs(actual, upper)
    return float(np.mean(a <= f)) if a.size else math.nan
