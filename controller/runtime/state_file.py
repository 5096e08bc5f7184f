"""The state file itself: its errors, the one-daemon lock beside it, and moving a damaged one aside."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import structlog

__all__ = [
    "RECOVER_HINT",
    "StateInUseError",
    "StoreDamagedError",
    "StoreError",
    "is_corruption",
    "lock_path_of",
    "move_aside",
]

log = structlog.get_logger("pdscale.controller.runtime.store")


class StoreError(RuntimeError):
    """The state file cannot be opened or has an incompatible schema."""


RECOVER_HINT = "stop pdscale and start it with `pdscale serve --config FILE --state-recover` (moves the file aside)"
_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_CORRUPT_WORDS = ("malformed", "not a database")


class StoreDamagedError(StoreError):
    """The state file turned out damaged while the daemon ran: every later read and write is refused."""


def is_corruption(exc: BaseException) -> bool:
    """Whether a sqlite error says the file itself is damaged (not busy, locked or full)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF in _CORRUPT_CODES) or any(w in str(exc) for w in _CORRUPT_WORDS)


class StateInUseError(StoreError):
    """Another daemon holds the state file (never moved aside by ``--state-recover``)."""


def move_aside(path: Path, now_s: float) -> Path:
    """Rename a damaged state file (and its -wal/-shm) to ``<name>.damaged-<UTC time>``; returns the new path."""
    import time  # noqa: PLC0415

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_s))
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(dest.with_name(dest.name + suffix))
    log.warning(
        "state_file_moved_aside",
        path=str(path),
        moved_to=str(dest),
        lost="decisions, intents, applied targets, overrides, pause state and runtime policy/SLO/budget changes",
    )
    return dest


def lock_path_of(path: Path) -> Path:
    """The lock file that guards the state file ``path``."""
    return path.with_name(path.name + ".lock")


def claim_state_file(path: Path, holder: str | None = None) -> Any:
    """Hold an exclusive lock on ``<state>.lock`` for this process's lifetime: two daemons on one state file
    would overwrite each other's rows and both actuate. The lock dies with the process (kill -9 included).
    The lock file then names ``holder`` (default: the process id)."""
    import fcntl  # noqa: PLC0415  (POSIX only; only the daemon claims its state file)

    lock_path = lock_path_of(path)
    fh = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise StateInUseError(
            f"state file {path} is in use by another pdscale daemon ({holder}); one daemon per state file "
            "(stop it, or give this one its own state.path)"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{holder or f'pid {os.getpid()}'}\n")
    fh.flush()
    return fh
