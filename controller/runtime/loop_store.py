"""The control loop's writes to its state store: intents around each call, decisions left unsaved by a failing
store, and what a failure does (one ERROR, /readyz 503 meanwhile, retried every tick, never a crash).

``StoreWrites`` is a part of ``runtime.loop.Reconciler``; it keeps the loop's module about the tick itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from pdscale.controller.runtime.intents import LateLandings
from pdscale.controller.runtime.loop_parts import NoIntent
from pdscale.controller.runtime.record import (
    DecisionRecord,
    Intent,
    IntentKind,
    IntentOutcome,
    Outcome,
    Recorder,
)
from pdscale.controller.runtime.state_file import StoreDamagedError

__all__ = ["StoreWrites"]

log = structlog.get_logger("pdscale.loop")


class StoreWrites:
    """Persisting writes of one Reconciler (which sets these attributes)."""

    recorder: Recorder
    landings: LateLandings
    store_error: str | None
    _unsaved: list[DecisionRecord]

    def _intent_begin(
        self,
        pool: str,
        target: int,
        now: float,
        rec_id: int | None,
        kind: IntentKind = IntentKind.SET_TARGET,
        spec: Mapping[str, Any] | None = None,
    ) -> int | None:
        begin = getattr(self.recorder, "begin_intent", None)
        if not callable(begin):
            return None
        ids: list[int] = []
        ok = self._persist(lambda: ids.append(int(begin(pool, target, now, decision_id=rec_id, kind=kind, spec=spec))))
        if not ok:
            raise NoIntent
        return ids[0]

    def _intent_failed(
        self,
        intent: int | None,
        pool: str,
        target: int,
        now: float,
        rec_id: int | None,
        error: str,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        """A call that raised may still land (a timeout after the write): remember it as unconfirmed."""
        self._intent_end(intent, Outcome.FAILED.value, error)
        kind = IntentKind.FLIP if spec is not None else IntentKind.SET_TARGET
        self.landings.add(
            Intent(intent or 0, pool, target, now, IntentOutcome.FAILED, error, rec_id, kind, dict(spec or {}))
        )

    def _intent_end(self, intent: int | None, outcome: str, detail: str) -> None:
        finish = getattr(self.recorder, "finish_intent", None)
        if intent is not None and callable(finish):
            self._persist(finish, intent, outcome, detail)

    def _persist(self, write: Callable[..., Any], *args: Any) -> bool:
        """One state write; a failure (disk full, damaged file) is logged at ERROR once, and the loop goes on.

        A damaged file was already reported by the store itself (``state_db_damaged``, naming the fix): the loop
        adds no second ERROR for it."""
        try:
            write(*args)
        except Exception as exc:
            if self.store_error is None and not isinstance(exc, StoreDamagedError):
                log.error(
                    "state_write_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    action="deciding on without actuating; retried every tick; /readyz answers 503 until it works",
                )
            self.store_error = f"{type(exc).__name__}: {exc}"
            return False
        return True

    def _flush(self) -> None:
        """Write the decisions a failing store left unsaved (oldest first); clears the error once all are in."""
        while self._unsaved and self._persist(self.recorder.record, self._unsaved[0]):
            self._unsaved.pop(0)
        if not self._unsaved and self.store_error is not None:
            log.info("state_write_recovered", error_was=self.store_error)
            self.store_error = None
