"""The audit trail: every tick's decision with its inputs and per-pool outcomes.

``Recorder`` is the seam the state store implements (SQLite in the daemon); ``InMemoryRecorder`` keeps a
bounded list for tests, replays and the embedded simulator.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pdscale.controller.core.types import Decision

__all__ = [
    "DecisionRecord",
    "InMemoryRecorder",
    "Intent",
    "IntentKind",
    "IntentOutcome",
    "IntentResolution",
    "Outcome",
    "PoolOutcome",
    "Recorder",
]


class Outcome(StrEnum):
    """What happened to a pool's decision."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    BACKOFF = "backoff"
    DRY_RUN = "dry_run"
    HELD = "held"
    PENDING = "pending"
    """Recorded before the actuator call; a crash leaves it so until the restart settles the call."""
    NOT_APPLIED = "not_applied"
    """Settled after a crash: the actuator does not hold the target the call asked for."""


@dataclass(frozen=True, slots=True)
class PoolOutcome:
    """The result of acting (or not) on one pool's target."""

    outcome: Outcome
    detail: str = ""
    error_class: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A decision, the inputs it was made from (JSON-able), and what happened."""

    id: int
    decision: Decision
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outcomes: Mapping[str, PoolOutcome] = field(default_factory=dict)


class Recorder(Protocol):
    """Persists decisions and the targets pdscale last applied."""

    def next_id(self) -> int:
        """A fresh, increasing decision id."""
        ...

    def record(self, rec: DecisionRecord) -> None:
        """Append a decision (with outcomes)."""
        ...

    def last_applied(self) -> dict[str, int]:
        """Targets pdscale last set successfully, per pool."""
        ...

    def set_applied(self, pool: str, target: int) -> None:
        """Remember a target pdscale has set."""
        ...

    def recent(self, limit: int = 100) -> Sequence[DecisionRecord]:
        """Newest first."""
        ...


class InMemoryRecorder:
    """A bounded in-memory recorder (state is lost on exit)."""

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: deque[DecisionRecord] = deque(maxlen=max_records)
        self._applied: dict[str, int] = {}
        self._id = 0

    def next_id(self) -> int:
        """A fresh, increasing decision id."""
        self._id += 1
        return self._id

    def record(self, rec: DecisionRecord) -> None:
        """Append a decision (a second record with the newest id replaces it: its outcomes after actuation)."""
        if self._records and self._records[-1].id == rec.id:
            self._records[-1] = rec
        else:
            self._records.append(rec)

    def last_applied(self) -> dict[str, int]:
        """Targets last set, per pool."""
        return dict(self._applied)

    def set_applied(self, pool: str, target: int) -> None:
        """Remember a target pdscale has set."""
        self._applied[pool] = target

    def recent(self, limit: int = 100) -> list[DecisionRecord]:
        """Newest first."""
        return list(reversed(self._records))[:limit]


class IntentOutcome(StrEnum):
    """How an actuation intent ended."""

    APPLIED = "applied"
    FAILED = "failed"
    NOT_APPLIED = "not_applied"
    """Found open after a crash with the actuator not at the intended target: the call never took effect."""
    UNVERIFIED = "unverified"
    """Found open after a crash and the actuator could not be read; nothing is retried."""


class IntentKind(StrEnum):
    """Which actuator call an intent stands for."""

    SET_TARGET = "set_target"
    FLIP = "flip"
    """``flip_roles``: ``pool`` is the source pool, ``target`` its count after the flip; ``spec`` holds
    ``to_pool``, ``count`` and both pools' targets before it (``from_before``, ``to_before``)."""


@dataclass(frozen=True, slots=True)
class Intent:
    """An actuator call pdscale was about to make."""

    id: int
    pool: str
    target: int
    created_s: float
    outcome: IntentOutcome | None = None
    detail: str = ""
    decision_id: int | None = None
    """The decision record the call acts on (its outcome is written there too)."""
    kind: IntentKind = IntentKind.SET_TARGET
    spec: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IntentResolution:
    """What ``reconcile_intents`` concluded about one open intent."""

    intent: Intent
    outcome: IntentOutcome
    actual_target: int | None
