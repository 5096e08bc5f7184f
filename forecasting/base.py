"""The forecaster interface shared by every model, the ensemble and the controller."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = ["DEFAULT_QUANTILES", "Forecast", "Forecaster", "Signal"]

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)


class Signal(StrEnum):
    """A demand signal a pool is sized from."""

    PREFILL_TPS = "prefill_tps"
    """Prompt tokens per second arriving at the prefill pool."""
    REQUEST_RATE = "request_rate"
    """Requests per second."""
    DECODE_CONCURRENCY = "decode_concurrency"
    """Sequences being decoded at once."""
    KV_TOKENS = "kv_tokens"
    """KV-cache tokens held by running sequences."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """A forecast of one signal at ``horizon_s`` after the last observation.

    ``quantiles`` maps a probability (0.5, 0.9, 0.99 at least) to a value; values are never negative.
    A forecaster that is not ``ready`` (too little history) still returns its best guess.
    """

    mean: float
    quantiles: dict[float, float] = field(default_factory=dict)
    ready: bool = True
    model: str = ""
    horizon_s: float = 0.0
    note: str = ""

    def quantile(self, q: float) -> float:
        """Value at probability ``q``; interpolates between known quantiles, the mean if none."""
        if not self.quantiles:
            return self.mean
        if q in self.quantiles:
            return self.quantiles[q]
        keys = sorted(self.quantiles)
        if q <= keys[0]:
            return self.quantiles[keys[0]]
        if q >= keys[-1]:
            return self.quantiles[keys[-1]]
        for lo, hi in itertools.pairwise(keys):
            if lo <= q <= hi:
                w = (q - lo) / (hi - lo)
                return self.quantiles[lo] * (1 - w) + self.quantiles[hi] * w
        return self.mean  # pragma: no cover - unreachable with sorted keys

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean):
            raise ValueError(f"forecast mean must be finite, got {self.mean!r}")


@runtime_checkable
class Forecaster(Protocol):
    """An online forecaster of one signal.

    ``observe`` takes a sample at time ``t`` (seconds); ``None`` or NaN means *missing*, never zero.
    ``predict`` never raises for lack of data: it returns ``ready=False`` instead.
    """

    name: str

    def observe(self, t: float, value: float | None) -> None: ...

    def predict(self, horizon_s: float) -> Forecast: ...

    @property
    def ready(self) -> bool: ...
