"""The default forecaster: members scored online on horizon-ahead errors, combined by recent accuracy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import structlog

from pdscale.forecasting.base import Signal
from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.little import LittleLawConcurrency
from pdscale.forecasting.naive import LastValue, SeasonalNaive
from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.quantile import QuantileGbm
from pdscale.forecasting.smoothing import Ewma, Holt
from pdscale.forecasting.statsmodels_models import Arima, HoltWinters

__all__ = ["DEFAULT_MEMBERS", "MEMBER_CLASSES", "Ensemble"]

log = structlog.get_logger(__name__)

MEMBER_CLASSES: dict[str, type[GridForecaster]] = {
    "last_value": LastValue,
    "seasonal_naive": SeasonalNaive,
    "ewma": Ewma,
    "holt": Holt,
    "holt_winters": HoltWinters,
    "arima": Arima,
    "quantile_gbm": QuantileGbm,
}
DEFAULT_MEMBERS: tuple[str, ...] = tuple(MEMBER_CLASSES)
_LIGHT_MEMBERS: tuple[str, ...] = ("last_value", "seasonal_naive", "ewma", "holt", "holt_winters")
_SHARED = ("step_s", "season_s", "history_s", "horizons_s", "quantiles", "residual_window", "fits")


class Ensemble(GridForecaster):
    """Runs every member on the same observations and combines the best ones.

    At every closed step each member's forecast for ``h`` steps ahead is remembered for every tracked
    horizon; when the target step closes its absolute error is added to that member's score (a running
    mean turning into an exponentially weighted mean with ``halflife_steps``). A forecast combines the
    ``top_k`` ready members with at least ``min_scored`` scores, weighted by ``1 / score**2``
    (``combine="best"`` takes only the best). While no member qualifies (short history, or just after a
    level shift, which clears the scores) it forecasts with the first ready ``fallbacks`` member and
    says so in the note. Quantiles are the ensemble's own conformal residual quantiles.

    ``signal="decode_concurrency"`` adds a Little's-law member (``little_law``) fed by
    ``observe_drivers`` (request rate and decode duration); it competes like any other member.
    """

    name = "ensemble"

    def __init__(
        self,
        *,
        members: tuple[str, ...] = DEFAULT_MEMBERS,
        signal: Signal | str = Signal.PREFILL_TPS,
        combine: str = "inverse_error",
        top_k: int = 3,
        min_scored: int = 20,
        halflife_steps: float = 200.0,
        fallbacks: tuple[str, ...] = ("ewma", "last_value"),
        member_params: dict[str, dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        if combine not in ("inverse_error", "best"):
            raise ValueError(f"ensemble combine must be 'inverse_error' or 'best', got {combine!r}")
        unknown = [m for m in members if m not in MEMBER_CLASSES]
        if unknown:
            raise ValueError(f"unknown ensemble members {unknown}; known: {sorted(MEMBER_CLASSES)}")
        super().__init__(**kwargs)
        self.signal = Signal(signal)
        self.combine = combine
        self.top_k = max(1, top_k)
        self.min_scored = min_scored
        self.halflife_steps = halflife_steps
        self.fallbacks = fallbacks
        shared = {k: v for k, v in kwargs.items() if k in _SHARED}
        params = member_params or {}
        self.members: list[GridForecaster] = [MEMBER_CLASSES[m](**{**shared, **params.get(m, {})}) for m in members]
        if self.signal is Signal.DECODE_CONCURRENCY:
            light = {k: v for k, v in shared.items() if k != "horizons_s"}
            rate = Ensemble(members=_LIGHT_MEMBERS, signal=Signal.REQUEST_RATE, **shared)
            self.members.append(LittleLawConcurrency(rate_forecaster=rate, **light))
        self.member_names = [m.name for m in self.members]
        n = len(self.members)
        self._pending: dict[int, dict[int, FloatArray]] = {}
        self._score: dict[int, FloatArray] = {}
        self._count: dict[int, FloatArray] = {}
        self._zero = np.zeros(n)
        self.weights: dict[str, float] = {}

    def observe(self, t: float, value: float | None) -> None:
        """Feed every member, then score and close the ensemble's own steps."""
        v = self._validated(t, value)
        for m in self.members:
            m.observe(t, v)
        for k, y in self._grid.add(t, v):
            self._close(k, y)

    def observe_drivers(self, t: float, request_rate_rps: float | None, decode_s: float | None) -> None:
        """Request rate and decode duration for members derived from them (Little's law)."""
        for m in self.members:
            if isinstance(m, LittleLawConcurrency | Ensemble):
                m.observe_drivers(t, request_rate_rps, decode_s)

    def _update(self, k: int, y: float) -> None:
        for h in self._tracker.horizons:
            pending = self._pending.setdefault(h, {})
            pts = pending.pop(k, None)
            if pts is not None and math.isfinite(y):
                err = np.abs(y - pts)
                score = self._score.setdefault(h, self._zero.copy())
                count = self._count.setdefault(h, self._zero.copy())
                ok = np.isfinite(err)
                count[ok] += 1
                rate = np.maximum(1.0 / np.maximum(count, 1.0), math.log(2) / self.halflife_steps)
                score[ok] += rate[ok] * (err[ok] - score[ok])
            for key in [key for key in pending if key <= k]:
                del pending[key]

    def _close(self, k: int, y: float) -> None:
        super()._close(k, y)
        for h in self._tracker.horizons:
            self._pending.setdefault(h, {})[k + h] = np.array([m.point(h) for m in self.members])

    def _on_level_shift(self, k: int) -> None:
        self._score.clear()
        self._count.clear()
        self._pending.clear()

    def _weights(self, h: int) -> dict[int, float]:
        if not self._score:
            return {}
        key = min(self._score, key=lambda x: (abs(x - h), x))
        score, count = self._score[key], self._count[key]
        eligible = [i for i, m in enumerate(self.members) if m.ready and count[i] >= self.min_scored]
        if not eligible:
            return {}
        eligible.sort(key=lambda i: score[i])
        chosen = eligible[: 1 if self.combine == "best" else self.top_k]
        floor = max(1e-9, 1e-6 * float(np.mean(score[chosen])))
        inv = {i: 1.0 / max(float(score[i]), floor) ** 2 for i in chosen}
        total = sum(inv.values())
        return {i: w / total for i, w in inv.items()}

    def _point(self, h: int) -> float:
        weights = self._weights(h)
        if not weights:
            for name in self.fallbacks:
                for m in self.members:
                    if m.name == name and m.ready:
                        self._set_note(f"short scoring history; using {name}")
                        self.weights = {name: 1.0}
                        return m.point(h)
            self._set_note("short history; using last value")
            self.weights = {}
            return self._grid.last_finite()
        self.weights = {self.members[i].name: w for i, w in weights.items()}
        self._set_note("")
        return sum(w * self.members[i].point(h) for i, w in weights.items())

    def _set_note(self, note: str) -> None:
        if note != self._note and not self._note.startswith("fallback to last_value"):
            self._note = note

    @property
    def scores(self) -> dict[str, float]:
        """Current error score (smoothed absolute error at the first tracked horizon) per member."""
        if not self._score:
            return {}
        key = min(self._score)
        return {m.name: float(s) for m, s in zip(self.members, self._score[key], strict=True)}
