"""Where model fits run, so a statsmodels or scikit-learn refit never sits on the control tick.

- ``inline``: on the closing step, on the caller's thread. Deterministic; backtests and replays use it.
- ``thread``: one shared background thread. Off the tick, but a fit holds the GIL for most of its run, so a
  tick that overlaps it runs at about half speed.
- ``process``: one shared worker process (``python -m pdscale.forecasting.fit_worker``, a fresh interpreter: never a
  fork of the daemon, which runs gRPC threads, and no re-import of the caller's main module). Off the tick and
  off its interpreter; the daemon's default. The worker starts at the first fit and is restarted if it dies
  (the fits it held fail and are retried on their refit schedule); its fits are single-threaded like the
  others.

A forecaster hands ``submit`` a module-level function and its (picklable, copied) arguments; the job's result
is applied on the forecaster's own thread at a later step, which then catches up on the steps that closed
meanwhile. The inline fitter runs the function at once, so its result applies on the same step.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from typing import Any, Protocol, TypeVar

__all__ = [
    "FitJob",
    "FitMode",
    "FitWorkerError",
    "Fitter",
    "InlineFitter",
    "ProcessFitter",
    "ThreadFitter",
    "fitter_for",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class FitMode(StrEnum):
    """Where fits run (``forecasting.fits`` in the settings)."""

    INLINE = "inline"
    THREAD = "thread"
    PROCESS = "process"


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

    mode: FitMode

    def submit(self, fn: Callable[..., T], *args: Any) -> FitJob[T]:
        """Start ``fn(*args)``; ``fn`` must only read its arguments (and be a module-level function)."""
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

    mode: FitMode = FitMode.INLINE

    def submit(self, fn: Callable[..., T], *args: Any) -> FitJob[T]:
        """Run ``fn(*args)`` now; its exception is kept for ``result()``."""
        try:
            return _Done(fn(*args))  # type: ignore[return-value]
        except Exception as exc:  # handed to the forecaster, which falls back and says so
            return _Done(error=exc)  # type: ignore[return-value]


class ThreadFitter:
    """One daemon worker thread shared by every forecaster of the process: fits queue up."""

    mode: FitMode = FitMode.THREAD

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> FitJob[T]:
        """Queue ``fn(*args)`` on the fit thread."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdscale-fit")
            future: Future[T] = self._pool.submit(fn, *args)
        return future

    def shutdown(self) -> None:
        """Stop the worker once queued fits finish (a later submit starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class FitWorkerError(RuntimeError):
    """The fit process exited while it held fits."""


class ProcessFitter:
    """One worker process shared by every forecaster of the process.

    ``submit`` never blocks the caller: jobs go to a queue that a writer thread pickles into the worker's stdin
    (a large training window would otherwise wait in a full pipe while the worker finishes its previous fit),
    and a reader thread resolves the futures from its stdout.
    """

    mode: FitMode = FitMode.PROCESS

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._queue: queue.SimpleQueue[tuple[int, Callable[..., Any], tuple[Any, ...]] | None] | None = None
        self._pending: dict[int, Future[Any]] = {}
        self._seq = 0

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pdscale.forecasting.fit_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        jobs: queue.SimpleQueue[tuple[int, Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        threading.Thread(target=self._write, args=(proc, jobs), name="pdscale-fit-writer", daemon=True).start()
        threading.Thread(target=self._read, args=(proc,), name="pdscale-fit-reader", daemon=True).start()
        self._proc, self._queue = proc, jobs

    def _write(self, proc: subprocess.Popen[bytes], jobs: queue.SimpleQueue[Any]) -> None:
        from pdscale.forecasting.fit_worker import write_frame  # noqa: PLC0415

        assert proc.stdin is not None
        while (job := jobs.get()) is not None:
            try:
                write_frame(proc.stdin, job)  # type: ignore[arg-type]
            except (OSError, ValueError):
                break  # the worker is gone: the reader fails what it held
            except Exception as exc:  # an argument that cannot be pickled fails only its own fit
                self._fail(job[0], FitWorkerError(f"fit arguments not picklable: {exc}"))
        with contextlib.suppress(OSError):
            proc.stdin.close()

    def _fail(self, job_id: int, exc: BaseException) -> None:
        with self._lock:
            future = self._pending.pop(job_id, None)
        if future is not None:
            future.set_exception(exc)

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        from pdscale.forecasting.fit_worker import read_frame  # noqa: PLC0415

        assert proc.stdout is not None
        while True:
            try:
                frame = read_frame(proc.stdout)  # type: ignore[arg-type]
            except Exception:  # a torn frame: the worker is gone
                frame = None
            if frame is None:
                break
            job_id, ok, value = frame
            with self._lock:
                future = self._pending.pop(job_id, None)
            if future is not None:
                future.set_result(value) if ok else future.set_exception(value)
        proc.wait()
        with self._lock:
            if self._proc is proc:
                if self._queue is not None:
                    self._queue.put(None)
                self._proc, self._queue = None, None
            lost, self._pending = self._pending, {}
        for future in lost.values():
            future.set_exception(FitWorkerError(f"fit process exited (code {proc.returncode}) while fitting"))

    def submit(self, fn: Callable[..., T], *args: Any) -> FitJob[T]:
        """Queue ``fn(*args)`` for the fit process (started, or restarted, on demand); never blocks."""
        future: Future[T] = Future()
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self._queue is None:
                self._start()
            assert self._queue is not None
            self._seq += 1
            self._pending[self._seq] = future
            self._queue.put((self._seq, fn, args))
        return future

    def shutdown(self) -> None:
        """Let the worker finish its queued fits and exit (a later submit starts a new one)."""
        with self._lock:
            proc, jobs = self._proc, self._queue
            self._proc, self._queue = None, None
        if jobs is not None:
            jobs.put(None)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


INLINE = InlineFitter()
_SHARED: dict[FitMode, ThreadFitter | ProcessFitter] = {}
_shared_lock = threading.Lock()


def fitter_for(mode: FitMode | str) -> Fitter:
    """The process-wide fitter of a mode (the inline one, or the shared thread or process worker)."""
    mode = FitMode(mode)
    if mode is FitMode.INLINE:
        return INLINE
    with _shared_lock:
        if mode not in _SHARED:
            _SHARED[mode] = ThreadFitter() if mode is FitMode.THREAD else ProcessFitter()
        return _SHARED[mode]
