"""A bounded regular time grid that irregular observations are resampled onto."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["ClosedStep", "StepGrid"]

FloatArray = npt.NDArray[np.float64]

ClosedStep = tuple[int, float]
"""``(index, value)`` of a step that will not change any more; ``value`` is NaN for a gap."""

_EPS = 1e-9


class StepGrid:
    """Resamples ``(t, value)`` samples onto steps of ``step_s`` seconds, keeping at most ``capacity`` steps.

    Step ``k`` covers ``((k - 1) * step_s, k * step_s]`` and is labelled by its end time, like a rate
    that a metrics system reports over the interval before ``t``. A step's value is the mean of the
    finite samples that fell in it; a step without any is NaN (missing, never zero). A step closes when
    a sample at or after its end arrives; late samples for closed steps are dropped.
    """

    def __init__(self, step_s: float, capacity: int) -> None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise ValueError(f"step_s must be a positive number of seconds, got {step_s!r}")
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 steps, got {capacity!r}")
        self.step_s = float(step_s)
        self.capacity = int(capacity)
        self._values: FloatArray = np.full(self.capacity, np.nan)
        self._last_closed: int | None = None
        self._n_closed = 0
        self._open: int | None = None
        self._open_sum = 0.0
        self._open_count = 0
        self.last_t: float | None = None
        self.dropped_late = 0

    def step_index(self, t: float) -> int:
        """Index of the step that contains time ``t``."""
        return math.ceil(t / self.step_s - _EPS)

    @property
    def last_closed(self) -> int | None:
        """Index of the newest closed step, None before the first one closes."""
        return self._last_closed

    @property
    def n_closed(self) -> int:
        """Closed steps held (at most ``capacity``)."""
        return self._n_closed

    def add(self, t: float, value: float) -> list[ClosedStep]:
        """Add one sample (NaN = missing) and return the steps this closes, oldest first."""
        k = self.step_index(t)
        closed: list[ClosedStep] = []
        if self._last_closed is not None and k <= self._last_closed:
            self.dropped_late += 1
            return closed
        if self._open is not None and k > self._open:
            closed.extend(self._close_open())
            gap_end = k - 1
            assert self._last_closed is not None
            first_gap = self._last_closed + 1
            if gap_end - first_gap + 1 > self.capacity:
                first_gap = gap_end - self.capacity + 1
            for j in range(first_gap, gap_end + 1):
                closed.append(self._push(j, math.nan))
        elif self._open is None and self._last_closed is not None:
            for j in range(max(self._last_closed + 1, k - self.capacity), k):
                closed.append(self._push(j, math.nan))
        if self._open is None:
            self._open, self._open_sum, self._open_count = k, 0.0, 0
        if math.isfinite(value):
            self._open_sum += value
            self._open_count += 1
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        if t >= k * self.step_s - _EPS * self.step_s:
            closed.extend(self._close_open())
        return closed

    def _close_open(self) -> list[ClosedStep]:
        if self._open is None:
            return []
        value = self._open_sum / self._open_count if self._open_count else math.nan
        step = self._push(self._open, value)
        self._open = None
        return [step]

    def _push(self, k: int, value: float) -> ClosedStep:
        self._values[k % self.capacity] = value
        self._last_closed = k
        self._n_closed = min(self._n_closed + 1, self.capacity)
        return (k, value)

    def recent(self, n: int) -> FloatArray:
        """The newest ``n`` closed values (fewer if not held), oldest first."""
        n = min(n, self._n_closed)
        if n <= 0 or self._last_closed is None:
            return np.empty(0)
        idx = np.arange(self._last_closed - n + 1, self._last_closed + 1) % self.capacity
        return self._values[idx]

    def value_at(self, k: int) -> float:
        """Closed value of step ``k``; NaN when missing, open, or no longer held."""
        if self._last_closed is None or k > self._last_closed or k <= self._last_closed - self._n_closed:
            return math.nan
        return float(self._values[k % self.capacity])

    def last_finite(self) -> float:
        """Newest finite closed value, NaN if none is held."""
        vals = self.recent(self._n_closed)
        finite = vals[np.isfinite(vals)]
        return float(finite[-1]) if finite.size else math.nan
