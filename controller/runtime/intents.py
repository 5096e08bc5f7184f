"""Settling the actuation intents a crash left open, against what the actuator reports now.

The loop writes an intent row before each ``set_target`` and its outcome after (``SqliteStore.begin_intent`` /
``finish_intent``); on start the daemon calls :func:`reconcile_intents` before its first decision.
"""

from __future__ import annotations

import structlog

from pdscale.controller.core.protocols import Actuator
from pdscale.controller.runtime.store import IntentOutcome, IntentResolution, SqliteStore

__all__ = ["reconcile_intents"]

log = structlog.get_logger(__name__)


def reconcile_intents(store: SqliteStore, actuator: Actuator) -> list[IntentResolution]:
    """Settle intents left open by a crash against the actuator's current targets; never calls set_target.

    Target reached: the call took effect, so it is marked applied and remembered as the applied target (the loop
    then sees no external change and does not repeat it). Otherwise it never took effect and is marked so.
    """
    out: list[IntentResolution] = []
    for intent in store.open_intents():
        try:
            actual: int | None = actuator.target_size(intent.pool)
        except Exception as exc:
            store.finish_intent(intent.id, IntentOutcome.UNVERIFIED, f"{type(exc).__name__}: {exc}")
            out.append(IntentResolution(intent, IntentOutcome.UNVERIFIED, None))
            log.warning("intent_unverified", pool=intent.pool, target=intent.target, error=str(exc))
            continue
        if actual == intent.target:
            store.set_applied(intent.pool, intent.target)
            store.finish_intent(intent.id, IntentOutcome.APPLIED, "confirmed after restart")
            outcome = IntentOutcome.APPLIED
        else:
            store.finish_intent(intent.id, IntentOutcome.NOT_APPLIED, f"actuator at {actual} after restart")
            outcome = IntentOutcome.NOT_APPLIED
        out.append(IntentResolution(intent, outcome, actual))
        log.info("intent_reconciled", pool=intent.pool, target=intent.target, actual=actual, outcome=outcome.value)
    return out
