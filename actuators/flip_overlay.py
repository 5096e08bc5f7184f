"""Which worker serves which pool after role flips, kept in a small JSON file so a restart (or a standby taking
over) still knows it.

The role-flip actuators (``http_role_flip``, ``sglang_role_switch``) keep counts with a base scaler that groups
workers by their home pool; the overlay says which of them serve another pool now. A flip of one worker is written
in two steps around the engine calls:

1. ``begin``: the worker is marked *pending* (from, to) before any call reaches the engine or the router;
2. ``commit`` once the engine serves the new role (the worker now counts in ``to``), or ``abort`` when the flip
   failed before the switch (it stays in ``from``).

A process killed between the two leaves the worker pending: it still counts in ``from`` until the actuator's
``resume_pending`` (called by the daemon before it settles its intents) finishes that flip. Every change is a
read-modify-write under an flock of ``<file>.lock`` that replaces the file atomically (temporary file, fsync,
rename), and readers re-read it when it changed on disk, so a standby's actuator sees the leader's flips and
neither loses the other's changes. Without a path the overlay lives in memory (a restart regroups by home pool).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass

__all__ = ["FlipOverlay", "PendingFlip"]

_VERSION = 1


@dataclass(frozen=True, slots=True)
class PendingFlip:
    """A flip of one worker that began and has not been confirmed or given up."""

    from_pool: str
    to_pool: str
    home_target: int | None = None
    """For a worker sent home to be removed: the base target of its home pool once it is back (idempotent)."""


class FlipOverlay:
    """Worker id to the pool it serves (``where``) and the flips in progress (``pending``)."""

    def __init__(self, path: str | Path | None, backend: str) -> None:
        self.path = Path(path) if path is not None else None
        self.backend = backend
        self.where: dict[str, str] = {}
        self.pending: dict[str, PendingFlip] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.refresh()

    # -- reading ---------------------------------------------------------------------------------------
    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)  # a rename gives a new inode

    def refresh(self) -> None:
        """Re-read the file when it changed on disk since this process last read or wrote it."""
        stamp = self._stat()
        if self.path is None or stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            self.where, self.pending = {}, {}
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            where = {str(k): str(v) for k, v in dict(data.get("where") or {}).items()}
            pending = {
                str(k): PendingFlip(str(v["from"]), str(v["to"]), _opt_int(v.get("home_target")))
                for k, v in dict(data.get("pending") or {}).items()
            }
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ActuationError(
                f"{self.backend}: role overlay {self.path} is unreadable ({type(exc).__name__}: {exc}); "
                "fix or delete it (deleting regroups every worker by its home pool)",
                ErrorClass.PERMANENT,
            ) from None
        self.where, self.pending = where, pending

    def pool_of(self, replica: str, home: str) -> str:
        """The pool ``replica`` serves: its recorded pool, else (never flipped) its home pool."""
        return self.where.get(replica, home)

    # -- writing: each change is a read-modify-write under the file's lock, so two processes (a leader and a
    # standby that drops removed workers) never lose each other's changes -----------------------------------
    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a", encoding="utf-8") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            self.refresh()
            yield
            self._save()

    def begin(self, replica: str, from_pool: str, to_pool: str, home_target: int | None = None) -> None:
        """Mark ``replica`` as being flipped, before any call is made for it."""
        with self._changing():
            self.pending[replica] = PendingFlip(from_pool, to_pool, home_target)

    def commit(self, replica: str) -> None:
        """The engine serves the new role: ``replica`` counts in the pool it was flipped to."""
        with self._changing():
            flip = self.pending.pop(replica, None)
            if flip is not None:
                self.where[replica] = flip.to_pool

    def abort(self, replica: str) -> None:
        """The flip failed before the switch: ``replica`` stays where it was."""
        if replica in self.pending:
            with self._changing():
                self.pending.pop(replica, None)

    def forget(self, replicas: set[str]) -> None:
        """Drop workers the base scaler no longer has (removed, or never there)."""
        if (set(self.where) | set(self.pending)) - replicas:
            with self._changing():
                for rid in (set(self.where) | set(self.pending)) - replicas:
                    self.where.pop(rid, None)
                    self.pending.pop(rid, None)

    def _save(self) -> None:
        if self.path is None:
            return
        body = {
            "version": _VERSION,
            "where": dict(sorted(self.where.items())),
            "pending": {k: _pending_json(v) for k, v in sorted(self.pending.items())},
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(body, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ActuationError(
                f"{self.backend}: cannot write the role overlay {self.path}: {exc}", ErrorClass.TRANSIENT
            ) from None
        self._stamp = self._stat()


def _pending_json(p: PendingFlip) -> dict[str, Any]:
    out: dict[str, Any] = {"from": p.from_pool, "to": p.to_pool}
    if p.home_target is not None:
        out["home_target"] = p.home_target
    return out


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"home_target {v!r} is not a replica count")
    return v


def _fsync_dir(path: Path) -> None:
    fd: Any = None
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
    except OSError:
        pass  # not every filesystem lets a directory be fsynced; the rename is still atomic
    finally:
        if fd is not None:
            os.close(fd)
