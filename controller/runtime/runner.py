"""The runner: repeats ``Reconciler.run_once`` every ``tick_s`` on a clock, until SIGTERM/SIGINT or ``stop()``.

Long-running side tasks (admin server, telemetry) are spawned through it so a crash in one is logged and the
loop goes on; SIGHUP calls the reload hook the daemon installs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from pdscale.controller.runtime.loop import Reconciler, TickResult

__all__ = ["Runner"]

log = structlog.get_logger("pdscale.loop")


class Runner:
    """Runs ``reconciler.run_once`` every ``tick_s`` of ``clock`` until stopped.

    ``before_tick`` (e.g. advance an embedded simulator) and ``after_tick`` (telemetry) hooks run around each
    tick. ``gate`` (leader election) is asked before each tick: while it answers False no tick runs (nothing is
    decided, recorded or actuated) and it is asked again every ``gate_poll_s``.
    ``stop()`` lets the current tick finish; SIGTERM/SIGINT call it when ``install_signal_handlers`` ran.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        *,
        tick_s: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        before_tick: Callable[[float], Any] | None = None,
        after_tick: Callable[[TickResult], Any] | None = None,
        max_ticks: int | None = None,
        wall_per_tick_s: float | None = None,
        gate: Callable[[], Any] | None = None,
        gate_poll_s: float = 1.0,
    ) -> None:
        self.reconciler = reconciler
        self.tick_s = tick_s
        self.clock = clock
        self.sleep = sleep
        self.before_tick = before_tick
        self.after_tick = after_tick
        self.max_ticks = max_ticks
        self.wall_per_tick_s = wall_per_tick_s
        self.gate = gate
        self.gate_poll_s = gate_poll_s
        self.ticks = 0
        self._stop = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def stop(self) -> None:
        """Ask the loop to stop after the current tick."""
        log.info("runner_stopping")
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether ``stop`` was called."""
        return self._stop.is_set()

    def install_signal_handlers(self, reload: Callable[[], None] | None = None) -> None:
        """SIGTERM/SIGINT stop gracefully; SIGHUP calls ``reload`` when given."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if reload is not None:
            loop.add_signal_handler(signal.SIGHUP, reload)

    def spawn(self, name: str, coro: Awaitable[None]) -> asyncio.Task[None]:
        """Start a named, guarded task: an unexpected exit is logged, never silent."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task_crashed", task=name)
                raise

        task = asyncio.create_task(guarded(), name=name)
        self.tasks[name] = task
        return task

    async def _maybe_await(self, value: Any) -> None:
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            await value

    async def _gate_open(self) -> bool:
        assert self.gate is not None
        value = self.gate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        return bool(value)

    async def run(self) -> int:
        """Tick until stopped or ``max_ticks``; returns an exit code (0: clean stop)."""
        next_at = self.clock()
        paced = self.wall_per_tick_s is not None  # a simulated clock paced by wall time: ticks on their slots
        gated = False
        while not self._stop.is_set():
            if self.gate is not None:
                if not await self._gate_open():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), timeout=self.gate_poll_s)
                    gated = True
                    continue
                if gated:  # a standby's missed slots are not ticks behind: start afresh when let in
                    next_at, gated = self.clock(), False
            # On the real clock a tick's ``now`` is the clock's time, never a slot it is running behind: windows
            # and step limits are measured on time that really passed.
            now = next_at if paced else max(next_at, self.clock())
            if self.before_tick is not None:
                await self._maybe_await(self.before_tick(now))
            result = await asyncio.to_thread(self.reconciler.run_once, now)
            self.ticks += 1
            if self.after_tick is not None:
                await self._maybe_await(self.after_tick(result))
            if self.max_ticks is not None and self.ticks >= self.max_ticks:
                break
            next_at = now + self.tick_s
            if not paced:
                behind_s = self.clock() - next_at
                if behind_s >= self.tick_s:  # whole slots missed: skip them, never replay them back to back
                    skipped = int(behind_s // self.tick_s)
                    next_at += skipped * self.tick_s
                    log.warning("ticks_skipped", count=skipped, behind_s=round(behind_s, 3), tick_s=self.tick_s)
            delay = self.wall_per_tick_s if self.wall_per_tick_s is not None else max(0.0, next_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
        for task in self.tasks.values():
            task.cancel()
        log.info("runner_stopped", ticks=self.ticks)
        return 0
