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

__all__ = ["DecisionRecord", "InMemoryRecorder", "Outcome", "PoolOutcome", "Recorder"]


class Outcome(StrEnum):
    """What happened to a pool's decision."""

    APPLIED = "applied"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    BACKOFF = "backoff"
    DRY_RUN = "dry_run"
    HELD = "held"


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
        """Append a decision."""
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
