"""Fan-out of new decisions to WatchDecisions streams (bounded queues: a slow watcher loses the oldest)."""

from __future__ import annotations

import asyncio
import contextlib

from pdscale.controller.runtime.record import DecisionRecord

__all__ = ["DecisionHub"]


class DecisionHub:
    """Publishes each recorded decision to every subscriber's queue; call from the event loop's thread."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subs: set[asyncio.Queue[DecisionRecord]] = set()

    def subscribe(self) -> asyncio.Queue[DecisionRecord]:
        """A new queue receiving every later decision."""
        q: asyncio.Queue[DecisionRecord] = asyncio.Queue(maxsize=self.queue_size)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[DecisionRecord]) -> None:
        """Stop delivering to ``q``."""
        self._subs.discard(q)

    @property
    def subscribers(self) -> int:
        """Open watchers."""
        return len(self._subs)

    def publish(self, rec: DecisionRecord) -> None:
        """Deliver ``rec`` to every subscriber, dropping a full queue's oldest entry."""
        for q in self._subs:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(rec)
