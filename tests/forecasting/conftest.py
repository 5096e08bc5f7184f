"""Series generators shared by the forecasting tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

FloatArray = npt.NDArray[np.float64]
SineFactory = Callable[..., FloatArray]
Feeder = Callable[..., None]


def _sine(
    n: int, period: int, level: float = 100.0, amp: float = 40.0, noise: float = 4.0, seed: int = 0
) -> FloatArray:
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    return np.maximum(level + amp * np.sin(2 * np.pi * i / period) + rng.normal(0, noise, n), 0.0)


def _feed(model: object, values: FloatArray, step_s: float = 60.0, start: int = 0) -> None:
    for j, v in enumerate(values):
        model.observe((start + j) * step_s, float(v))  # type: ignore[attr-defined]


@pytest.fixture
def sine() -> SineFactory:
    """``sine(n, period, level=, amp=, noise=, seed=)``: a seasonal series with noise, never negative."""
    return _sine


@pytest.fixture
def feed() -> Feeder:
    """``feed(model, values, step_s=60, start=0)``: observes ``values[j]`` at ``(start + j) * step_s``."""
    return _feed
