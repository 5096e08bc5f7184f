"""Where model fits run: inline on the closing step (deterministic; backtests and replays) or on one shared
background thread (the daemon), so a statsmodels or scikit-learn refit never sits on the control tick.

A forecaster hands ``submit`` a pure function of copied data; the job's result is applied on the forecaster's
own thread at a later step, which then catches up on the steps that closed meanwhile. The inline fitter runs
the function at once, so its result applies on the same step, exactly as a fit in place would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

__all__ = ["BACKGROUND", "INLINE", "BackgroundFitter", "FitJob", "Fitter", "InlineFitter"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class FitJob(Protocol[T_co]):
    """A submitted fit: ``done()`` without blocking, then ``result()`` (re-raises the fit's exception)."""

    def done(self) -> bool:
        """Whether the fit has finished."""
        ...

    def result(self) -> T_co:
        """The fit's value; raises what the fit raised."""
        ...


class Fitter(Protocol):
    """Runs fits."""

    def submit(self, fn: Callable[[], T]) -> FitJob[T]:
        """Start ``fn``; it must only read the data it closes over."""
        ...


class _Done:
    def __init__(self, value: object = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error

    def done(self) -> bool:
        return True

    def result(self) -> object:
        if self._error is not None:
            raise self._error
        return self._value


class InlineFitter:
    """Runs each fit at once, on the caller's thread."""

    def submit(self, fn: Callable[[], T]) -> FitJob[T]:
        """Run ``fn`` now; its exception is kept for ``result()``."""
        try:
            return _Done(fn())  # type: ignore[return-value]
        except Exception as exc:  # handed to the forecaster, which falls back and says so
            return _Done(error=exc)  # type: ignore[return-value]


class BackgroundFitter:
    """One daemon worker thread shared by every forecaster of the process: fits queue up, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[], T]) -> FitJob[T]:
        """Queue ``fn`` on the fit thread."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdscale-fit")
            future: Future[T] = self._pool.submit(fn)
        return future

    def shutdown(self) -> None:
        """Stop the worker once queued fits finish (a later submit starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


INLINE = InlineFitter()
BACKGROUND = BackgroundFitter()
