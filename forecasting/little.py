"""Decode concurrency from Little's law: forecast request rate x expected decode duration (OSL x ITL)."""

from __future__ import annotations

import math
from typing import Any

from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.smoothing import Ewma

__all__ = ["LittleLawConcurrency"]


class LittleLawConcurrency(GridForecaster):
    """Forecasts decode concurrency as ``rate(t + h) * D * c``.

    ``rate`` comes from ``rate_forecaster`` (an EWMA unless given), fed through ``observe_drivers``
    with the request rate and the mean decode duration ``D = output tokens x ITL`` of each step;
    ``D`` is smoothed exponentially. ``c`` is a slowly learned calibration (observed concurrency over
    ``rate * D``), which absorbs a constant offset such as time to first token. ``observe`` takes the
    observed concurrency, which is only used for calibration and scoring.
    """

    name = "little_law"

    def __init__(
        self,
        *,
        rate_forecaster: GridForecaster | None = None,
        decode_alpha: float = 0.05,
        calibration_alpha: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rate = (
            rate_forecaster
            if rate_forecaster is not None
            else Ewma(step_s=self.step_s, season_s=self.season_s, horizons_s=())
        )
        self.decode_alpha = decode_alpha
        self.calibration_alpha = calibration_alpha
        self._decode_s = math.nan
        self._step_decode: dict[int, float] = {}
        self._num = math.nan
        self._den = math.nan

    def observe_drivers(self, t: float, request_rate_rps: float | None, decode_s: float | None) -> None:
        """Request rate and mean decode duration seen at ``t`` (None/NaN: missing)."""
        self.rate.observe(t, request_rate_rps)
        d = math.nan if decode_s is None else float(decode_s)
        if math.isfinite(d) and d >= 0:
            self._decode_s = (
                d if not math.isfinite(self._decode_s) else (self._decode_s + self.decode_alpha * (d - self._decode_s))
            )
        r = math.nan if request_rate_rps is None else float(request_rate_rps)
        if math.isfinite(r) and math.isfinite(self._decode_s):
            self._step_decode[self._grid.step_index(t)] = r * self._decode_s
            if len(self._step_decode) > 64:
                del self._step_decode[min(self._step_decode)]

    def _model_ready(self) -> bool:
        return self.rate.ready and math.isfinite(self._decode_s)

    def _update(self, k: int, y: float) -> None:
        expected = self._step_decode.pop(k, math.nan)
        if math.isfinite(y) and math.isfinite(expected):
            a = self.calibration_alpha
            self._num = y if not math.isfinite(self._num) else self._num + a * (y - self._num)
            self._den = expected if not math.isfinite(self._den) else self._den + a * (expected - self._den)

    def _calibration(self) -> float:
        if math.isfinite(self._num) and math.isfinite(self._den) and self._den > 0:
            return min(max(self._num / self._den, 0.25), 4.0)
        return 1.0

    def _point(self, h: int) -> float:
        if not math.isfinite(self._decode_s) or self.rate.last_step is None:
            return math.nan
        return self.rate.point(h) * self._decode_s * self._calibration()
