"""Settling the actuation intents a crash left open, against what the actuator reports now; recognising a call
that lands late as pdscale's own write.

The protocol, per actuator call (``set_target`` or ``flip_roles``), in the loop's order:

1. the decision is recorded with outcome ``pending`` for the pools it is about to change;
2. an intent row (pool, target, decision id; for a flip both pools' counts before it) is written;
3. the actuator is called;
4. the applied target is remembered, the intent gets its outcome, the decision record gets its final outcomes.

A process killed anywhere in there leaves at most one open intent. On start (and when a standby takes over) the
daemon first lets the actuator finish what only it can know was interrupted (:func:`resume_interrupted`: a role
flip's worker left between its two roles), then calls :func:`reconcile_intents` before its first decision: it
reads the actuator's actual state, marks each open intent applied or not applied, writes that outcome into the
decision record, and never calls the actuator's writes. A call that was still in flight at the crash (or one
that raised, e.g. a timeout) may land later: :class:`LateLandings` keeps such unconfirmed calls for
``LANDING_WINDOW_S``, so the loop recognises the actuator reaching one of their targets as its own write landing
(settled as applied), never as another owner's change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from pdscale.controller.core.protocols import Actuator
from pdscale.controller.core.types import ErrorClass
from pdscale.controller.runtime.record import (
    Intent,
    IntentKind,
    IntentOutcome,
    IntentResolution,
    Outcome,
    PoolOutcome,
)
from pdscale.controller.runtime.store import SqliteStore

__all__ = ["LANDING_WINDOW_S", "LateLandings", "reconcile_intents", "resume_interrupted"]

log = structlog.get_logger(__name__)

LANDING_WINDOW_S = 900.0
"""How long (loop clock) an unconfirmed call may still land: above an actuator's timeouts times its retries."""


def resume_interrupted(actuator: Actuator, *, dry_run: bool = False) -> list[str]:
    """Call the actuator's ``resume_pending`` (if it has one) as the daemon becomes the one that actuates.

    Role-flip actuators finish a worker's flip that a crash left half done, so that afterwards every worker serves
    exactly one role and the intents settle against that. A failure is logged and start-up goes on (the intent then
    settles against what the actuator reports).
    """
    resume = getattr(actuator, "resume_pending", None)
    if dry_run or not callable(resume):
        return []
    try:
        done = [str(x) for x in resume()]
    except Exception as exc:
        log.warning("resume_interrupted_failed", error=f"{type(exc).__name__}: {exc}")
        return []
    if done:
        log.info("resumed_interrupted_actuation", replicas=done)
    return done


def reconcile_intents(store: SqliteStore, actuator: Actuator) -> list[IntentResolution]:
    """Settle intents left open by a crash against the actuator's current state; never calls the actuator's
    writes.

    Target reached: the call took effect, so it is marked applied and remembered as the applied target (the loop
    then sees no external change and does not repeat it). Strictly between the last applied target and the
    intent's: the call stopped midway, applied as far as it got. Otherwise it has not taken effect (yet) and is
    marked not applied. Either way the outcome is written into the decision record of the call.
    """
    out: list[IntentResolution] = []
    for intent in store.open_intents():
        if intent.kind is IntentKind.FLIP:
            res = _settle_flip(store, actuator, intent)
        else:
            res = _settle_set(store, actuator, intent)
        out.append(res)
    for rec in store.query(limit=1):  # only the tick in progress can have pools left pending
        for pool, o in rec.outcomes.items():
            if o.outcome is Outcome.PENDING:  # killed before its intent was written: no call was made
                store.set_outcome(rec.id, pool, PoolOutcome(Outcome.NOT_APPLIED, "no call made before the restart"))
    return out


def _settle_set(store: SqliteStore, actuator: Actuator, intent: Intent) -> IntentResolution:
    try:
        actual: int = actuator.target_size(intent.pool)
    except Exception as exc:
        return _unverified(store, intent, (intent.pool,), exc)
    before = store.last_applied().get(intent.pool)
    if actual == intent.target:
        store.set_applied(intent.pool, intent.target)
        outcome, detail = IntentOutcome.APPLIED, "confirmed after restart"
    elif before is not None and min(before, intent.target) < actual < max(before, intent.target):
        # Part of the way: a compound call (e.g. a role-flip actuator sending flipped-in workers home before it
        # resizes its base) stopped midway. pdscale's own write, wherever it stopped.
        store.set_applied(intent.pool, actual)
        outcome, detail = IntentOutcome.APPLIED, f"partial: at {actual} of {intent.target} (from {before})"
    else:
        outcome, detail = IntentOutcome.NOT_APPLIED, f"actuator at {actual} after restart"
    _settled(store, intent, outcome, detail, (intent.pool,))
    return IntentResolution(intent, outcome, actual)


def _settle_flip(store: SqliteStore, actuator: Actuator, intent: Intent) -> IntentResolution:
    spec = intent.spec
    to_pool, count = str(spec["to_pool"]), int(spec["count"])
    pools = (intent.pool, to_pool)
    try:
        now_from, now_to = actuator.target_size(intent.pool), actuator.target_size(to_pool)
    except Exception as exc:
        return _unverified(store, intent, pools, exc)
    moved_out, moved_in = int(spec["from_before"]) - now_from, now_to - int(spec["to_before"])
    if moved_out == 0 and moved_in == 0:
        outcome, detail = IntentOutcome.NOT_APPLIED, "no replica moved before the restart"
    else:  # all or part of it landed: pdscale's own write, wherever it stopped
        store.set_applied(intent.pool, now_from)
        store.set_applied(to_pool, now_to)
        outcome = IntentOutcome.APPLIED
        detail = "confirmed after restart" if moved_in == count else f"partial: {moved_in} of {count} moved"
    _settled(store, intent, outcome, detail, pools)
    return IntentResolution(intent, outcome, now_from)


def _unverified(store: SqliteStore, intent: Intent, pools: tuple[str, ...], exc: Exception) -> IntentResolution:
    error = f"{type(exc).__name__}: {exc}"
    store.finish_intent(intent.id, IntentOutcome.UNVERIFIED, error)
    if intent.decision_id is not None:
        for pool in pools:
            store.set_outcome(
                intent.decision_id,
                pool,
                PoolOutcome(Outcome.FAILED, f"unverified after restart: {error}", ErrorClass.TRANSIENT.value),
            )
    log.warning("intent_unverified", pool=intent.pool, target=intent.target, kind=intent.kind.value, error=error)
    return IntentResolution(intent, IntentOutcome.UNVERIFIED, None)


def _settled(store: SqliteStore, intent: Intent, outcome: IntentOutcome, detail: str, pools: tuple[str, ...]) -> None:
    store.finish_intent(intent.id, outcome, detail)
    rec_outcome = Outcome.APPLIED if outcome is IntentOutcome.APPLIED else Outcome.NOT_APPLIED
    found = intent.decision_id is not None and all(
        store.set_outcome(intent.decision_id, pool, PoolOutcome(rec_outcome, detail)) for pool in pools
    )
    log.info(
        "intent_reconciled",
        pool=intent.pool,
        target=intent.target,
        kind=intent.kind.value,
        outcome=outcome.value,
        detail=detail,
        decision_id=intent.decision_id,
        decision_found=found,
    )


@dataclass(frozen=True, slots=True)
class _Landing:
    pool: str
    target: int
    intent: Intent


class LateLandings:
    """Calls pdscale made that the actuator has not confirmed (failed, or settled not applied after a crash).

    ``claim(pool, target, now)`` answers whether the actuator now holding ``target`` is one of them landing:
    it then settles the intent as applied (and its decision record), so the loop takes the target as its own.
    """

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self._landings: list[_Landing] = []

    def load(self) -> None:
        """Re-read the unconfirmed intents from the store (after a restart settled the open ones)."""
        unconfirmed = getattr(self.recorder, "unconfirmed_intents", None)
        self._landings = []
        if callable(unconfirmed):
            for intent in reversed(unconfirmed(-float("inf"))):
                self.add(intent)

    def add(self, intent: Intent) -> None:
        """Remember an unconfirmed call (for a flip: the counts both pools would have after it)."""
        if intent.kind is IntentKind.FLIP:
            s = intent.spec
            self._landings.append(_Landing(intent.pool, intent.target, intent))
            self._landings.append(_Landing(str(s["to_pool"]), int(s["to_before"]) + int(s["count"]), intent))
        else:
            self._landings.append(_Landing(intent.pool, intent.target, intent))
        del self._landings[:-100]

    def claim(self, pool: str, target: int, now_s: float) -> Intent | None:
        """The unconfirmed call that ``target`` on ``pool`` is the landing of, settled as applied; or None."""
        self._landings = [x for x in self._landings if now_s - x.intent.created_s <= LANDING_WINDOW_S]
        for landing in reversed(self._landings):
            if landing.pool == pool and landing.target == target:
                self._landings.remove(landing)
                self._settle(landing, now_s)
                return landing.intent
        return None

    def _settle(self, landing: _Landing, now_s: float) -> None:
        intent = landing.intent
        detail = f"landed late (seen at {now_s:.0f}s)"
        finish = getattr(self.recorder, "finish_intent", None)
        if callable(finish):
            finish(intent.id, IntentOutcome.APPLIED, detail)
        set_outcome = getattr(self.recorder, "set_outcome", None)
        if callable(set_outcome) and intent.decision_id is not None:
            set_outcome(intent.decision_id, landing.pool, PoolOutcome(Outcome.APPLIED, detail))
        log.info("own_write_landed", pool=landing.pool, target=landing.target, intent=intent.id, kind=intent.kind.value)
