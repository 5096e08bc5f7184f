"""Persistent state of the daemon in SQLite (WAL): decisions with inputs and outcomes, actuation intents,
last applied targets, overrides, pause state and runtime policy/SLO/budget changes.

``SqliteStore`` implements ``pdscale.controller.runtime.record.Recorder``. Actuation is crash-safe: the loop writes
an *intent* row before calling the actuator and its outcome after (``begin_intent``/``finish_intent``); on start,
``runtime.intents.reconcile_intents`` checks each intent left without an outcome against the actuator's current
target and marks it applied (target reached) or not applied, never calling the actuator again.

Thread-safe: the loop (a worker thread) and the admin API (the event loop) share one connection under a lock.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import structlog

from pdscale.controller.core.types import Override, OverrideMode
from pdscale.controller.runtime.codec import decision_record_from_json, decision_record_to_json, dumps, scrub
from pdscale.controller.runtime.record import (
    DecisionRecord,
    Intent,
    IntentKind,
    IntentOutcome,
    IntentResolution,
    PoolOutcome,
)
from pdscale.controller.runtime.redact import redact, redact_text
from pdscale.controller.runtime.state_file import (
    RECOVER_HINT,
    StateInUseError,
    StoreDamagedError,
    StoreError,
    claim_state_file,
    is_corruption,
    lock_path_of,
    move_aside,
)

__all__ = [
    "ALL_POOLS_KEY",
    "Intent",
    "IntentKind",
    "IntentOutcome",
    "IntentResolution",
    "SqliteStore",
    "StateInUseError",
    "StoreDamagedError",
    "StoreError",
    "decision_record_from_json",
    "decision_record_to_json",
    "lock_path_of",
    "move_aside",
]

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
ALL_POOLS_KEY = "*"
_PRUNE_EVERY = 100
_KEEP_INTENTS = 10_000
_DAY_S = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    time_s REAL NOT NULL,
    policy TEXT NOT NULL,
    held INTEGER NOT NULL,
    pools TEXT NOT NULL,
    body TEXT NOT NULL,
    inputs TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions(time_s);
CREATE TABLE IF NOT EXISTS applied (pool TEXT PRIMARY KEY, target INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pool TEXT NOT NULL,
    target INTEGER NOT NULL,
    created_s REAL NOT NULL,
    outcome TEXT,
    detail TEXT NOT NULL DEFAULT '',
    decision_id INTEGER,
    kind TEXT NOT NULL DEFAULT 'set_target',
    spec TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS intents_open ON intents(outcome);
CREATE TABLE IF NOT EXISTS overrides (
    pool TEXT PRIMARY KEY, mode TEXT NOT NULL, replicas INTEGER NOT NULL, expires_s REAL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS paused (pool TEXT PRIMARY KEY, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_INTENT_COLUMNS = (
    ("decision_id", "INTEGER"),
    ("kind", "TEXT NOT NULL DEFAULT 'set_target'"),
    ("spec", "TEXT NOT NULL DEFAULT '{}'"),
)
_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))
"""The tables of a pdscale state DB (all of them exist in any file this code has opened)."""


class SqliteStore:
    """Decisions, intents, applied targets, overrides, pause and runtime settings in one SQLite file.

    ``path=None`` (or ``":memory:"``) keeps everything in memory: same API, nothing survives a restart.
    ``shared=True``: another daemon may own the file (a leader-election standby reads it); closing then never
    waits on the owner, and ``claim()`` takes ownership when this daemon becomes the leader.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        retention_days: float = 30.0,
        max_decisions: int = 100_000,
        exclusive: bool = False,
        shared: bool = False,
    ) -> None:
        self.path = None if path in (None, ":memory:") else Path(path)  # type: ignore[arg-type]
        self.retention_s = retention_days * _DAY_S
        self.max_decisions = max_decisions
        self._lock = threading.RLock()
        self._owner: Any = None
        self._shared = shared
        self.damaged: str | None = None
        """Set (for good) when a read or write during the run found the file damaged."""
        target = ":memory:" if self.path is None else str(self.path)
        existed = self.path is not None and self.path.exists()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._owner = claim_state_file(self.path)
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=10.0)
            if existed:
                self._check_existing(target)
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL under WAL: a killed process loses no committed row (only power loss could).
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_schema()
        except sqlite3.Error as exc:
            self._release()
            raise StoreError(f"state file {target}: {exc} (move it aside to start from an empty state)") from exc
        except StoreError:
            self._release()
            raise
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()
        self._id = int(row[0])
        self._since_prune = 0

    def _release(self) -> None:
        if self._owner is not None:
            self._owner.close()
            self._owner = None

    @property
    def lock(self) -> threading.RLock:
        """The lock every read and write of the file holds (a caller may take it to run several at once)."""
        return self._lock

    @property
    def claimed(self) -> bool:
        """Whether this process holds the state file's lock."""
        return self._owner is not None

    def claim(self, holder: str | None = None) -> None:
        """Take the state file's lock now (raises StoreError naming the holder when another daemon has it), then
        continue after the previous owner's decision ids."""
        with self._lock:
            if self.path is None or self._owner is not None:
                return
            self._owner = claim_state_file(self.path, holder)
        self.reload_ids()

    def reload_ids(self) -> None:
        """Continue decision ids after the newest row (another daemon may have written since this one opened)."""
        with self._read() as db:
            row = db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()
            self._id = max(self._id, int(row[0]))

    def release_claim(self) -> None:
        """Give up the state file's lock (a leader stepping down); the connection stays open for reads."""
        with self._lock:
            self._release()

    def _check_existing(self, target: str) -> None:
        """An existing state file must be an intact pdscale state DB: a truncated file, a dropped table or a
        corrupted page would otherwise reset decisions, overrides and pauses without a word."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted(_TABLES - tables)
        if missing:
            what = "is empty" if not tables else f"lacks table(s) {', '.join(missing)}"
            raise StoreError(
                f"state file {target} exists but {what}: not an intact pdscale state DB "
                "(move it aside to start from an empty state)"
            )
        problems = [r[0] for r in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StoreError(f"state file {target} is damaged ({'; '.join(problems)}); move it aside or restore it")

    def _check_schema(self) -> None:
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(intents)")}
        for name, decl in _INTENT_COLUMNS:  # files written before intents named their decision and kind
            if name not in columns:
                self._db.execute(f"ALTER TABLE intents ADD COLUMN {name} {decl}")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise StoreError(f"schema version {row[0]} is not supported (this pdscale writes {SCHEMA_VERSION})")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._read() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                with suppress(sqlite3.Error):  # a damaged file may refuse the rollback too
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; a damaged file found now or before raises ``StoreDamagedError``."""
        with self._lock:
            if self.damaged is not None:
                raise StoreDamagedError(self.damaged)
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                self.damaged = f"state file {self.path or ':memory:'} is damaged ({exc}); {RECOVER_HINT}"
                log.error(
                    "state_db_damaged",
                    path=str(self.path),
                    error=f"{type(exc).__name__}: {exc}",
                    fix=RECOVER_HINT,
                    meanwhile="state reads and writes refused; the loop decides on without actuating (no call "
                    "without its recorded decision) and keeps its last decisions in memory; /readyz answers 503",
                )
                raise StoreDamagedError(self.damaged) from None

    def close(self) -> None:
        """Checkpoint and close the file (and give up the daemon's claim on it)."""
        with self._lock:
            if self.path is not None and self.damaged is None:  # a damaged file is left as found, for recovery
                shared = self._shared and self._owner is None  # the owner may be writing: do not wait on it
                self._db.execute(f"PRAGMA wal_checkpoint({'PASSIVE' if shared else 'TRUNCATE'})")
            self._db.close()
            self._release()  # closing the lock file's descriptor releases the flock

    # -- Recorder -------------------------------------------------------------------------------------------
    def next_id(self) -> int:
        """A fresh, increasing decision id (continues after a restart)."""
        with self._lock:
            self._id += 1
            return self._id

    def record(self, rec: DecisionRecord) -> None:
        """Append a decision with its inputs and outcomes; prunes old rows now and then."""
        # Reasons, outcome details and inputs may quote a URL with its password: masked before they reach the file.
        body = dumps(redact(decision_record_to_json(rec)))
        inputs = dumps(redact(scrub(dict(rec.inputs))))
        pools = "," + ",".join(rec.decision.pools) + ","
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rec.id, rec.decision.time_s, rec.decision.policy, int(rec.decision.held), pools, body, inputs),
            )
            self._id = max(self._id, rec.id)
            self._since_prune += 1
            if self._since_prune >= _PRUNE_EVERY:
                self._since_prune = 0
                self._prune(db, rec.decision.time_s)

    def _prune(self, db: sqlite3.Connection, now_s: float) -> None:
        db.execute("DELETE FROM decisions WHERE time_s < ?", (now_s - self.retention_s,))
        db.execute("DELETE FROM decisions WHERE id <= ?", (self._id - self.max_decisions,))
        db.execute(
            "DELETE FROM intents WHERE outcome IS NOT NULL AND id <= (SELECT MAX(id) FROM intents) - ?",
            (_KEEP_INTENTS,),
        )

    def prune(self, now_s: float) -> None:
        """Apply retention (days, relative to ``now_s`` on the loop's clock) and the decision cap now."""
        with self._tx() as db:
            self._prune(db, now_s)

    def last_applied(self) -> dict[str, int]:
        """Targets pdscale last set successfully, per pool."""
        with self._read() as db:
            return {p: int(t) for p, t in db.execute("SELECT pool, target FROM applied")}

    def set_applied(self, pool: str, target: int) -> None:
        """Remember a target pdscale has set."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO applied VALUES (?, ?)", (pool, target))

    def recent(self, limit: int = 100) -> list[DecisionRecord]:
        """Newest first."""
        return self.query(limit=limit)

    # -- queries --------------------------------------------------------------------------------------------
    def query(
        self,
        *,
        pool: str | None = None,
        since_s: float | None = None,
        until_s: float | None = None,
        before_id: int | None = None,
        after_id: int | None = None,
        limit: int = 100,
        with_inputs: bool = False,
        oldest_first: bool = False,
    ) -> list[DecisionRecord]:
        """Decisions filtered by pool, loop-clock time range and id bounds; newest first unless told."""
        where: list[str] = []
        args: list[Any] = []
        if pool:
            where.append("instr(pools, ?) > 0")
            args.append(f",{pool},")
        if since_s is not None:
            where.append("time_s >= ?")
            args.append(since_s)
        if until_s is not None:
            where.append("time_s <= ?")
            args.append(until_s)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        cols = "body, inputs" if with_inputs else "body, '{}'"
        sql = f"SELECT {cols} FROM decisions"  # noqa: S608  (only fixed fragments are interpolated)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id {'ASC' if oldest_first else 'DESC'} LIMIT ?"
        args.append(max(0, limit))
        with self._read() as db:
            rows = db.execute(sql, args).fetchall()
        return [decision_record_from_json(json.loads(b), json.loads(i)) for b, i in rows]

    def get(self, decision_id: int) -> DecisionRecord | None:
        """One decision with its inputs, or None."""
        with self._read() as db:
            row = db.execute("SELECT body, inputs FROM decisions WHERE id = ?", (decision_id,)).fetchone()
        return None if row is None else decision_record_from_json(json.loads(row[0]), json.loads(row[1]))

    def count(self) -> int:
        """Decisions stored."""
        with self._read() as db:
            return int(db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0])

    # -- actuation intents ----------------------------------------------------------------------------------
    def begin_intent(
        self,
        pool: str,
        target: int,
        now_s: float,
        *,
        decision_id: int | None = None,
        kind: IntentKind = IntentKind.SET_TARGET,
        spec: Mapping[str, Any] | None = None,
    ) -> int:
        """Persist that pdscale is about to set ``pool`` to ``target`` (or flip); returns the intent id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO intents (pool, target, created_s, decision_id, kind, spec) VALUES (?, ?, ?, ?, ?, ?)",
                (pool, target, now_s, decision_id, IntentKind(kind).value, dumps(dict(spec or {}))),
            )
            return int(cur.lastrowid or 0)

    def finish_intent(self, intent_id: int, outcome: IntentOutcome | str, detail: str = "") -> None:
        """Record how an intent ended (again, when a call settled as not applied lands later)."""
        with self._tx() as db:
            db.execute(
                "UPDATE intents SET outcome = ?, detail = ? WHERE id = ?",
                (IntentOutcome(outcome), redact_text(detail), intent_id),
            )

    def open_intents(self) -> list[Intent]:
        """Intents without an outcome (the process stopped between the call and its result)."""
        return self.intents(open_only=True)

    def unconfirmed_intents(self, since_s: float, limit: int = 100) -> list[Intent]:
        """Intents since ``since_s`` that ended without the actuator confirming them (failed, not applied,
        unverified): such a call may still land, and must then be recognised as pdscale's own write."""
        return self._intents(
            "WHERE outcome IS NOT NULL AND outcome != 'applied' AND created_s >= ?", (since_s,), limit, newest=True
        )

    def intents(self, *, open_only: bool = False, limit: int = 1000) -> list[Intent]:
        """Intents, oldest first."""
        return self._intents("WHERE outcome IS NULL" if open_only else "", (), limit)

    def _intents(self, where: str, args: tuple[Any, ...], limit: int, *, newest: bool = False) -> list[Intent]:
        sql = f"SELECT id, pool, target, created_s, outcome, detail, decision_id, kind, spec FROM intents {where}"  # noqa: S608
        sql += f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT ?"
        with self._read() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [
            Intent(
                int(i),
                str(p),
                int(t),
                float(c),
                None if o is None else IntentOutcome(o),
                str(d),
                None if dec is None else int(dec),
                IntentKind(k),
                json.loads(sp or "{}"),
            )
            for i, p, t, c, o, d, dec, k, sp in rows
        ]

    def set_outcome(self, decision_id: int, pool: str, outcome: PoolOutcome) -> bool:
        """Rewrite one pool's outcome in a stored decision (an intent settled after a crash); whether it exists."""
        with self._tx() as db:
            row = db.execute("SELECT body FROM decisions WHERE id = ?", (decision_id,)).fetchone()
            if row is None:
                return False
            body = json.loads(row[0])
            body["outcomes"][pool] = {
                "outcome": outcome.outcome.value,
                "detail": redact_text(outcome.detail),
                "error_class": outcome.error_class,
            }
            db.execute("UPDATE decisions SET body = ? WHERE id = ?", (dumps(body), decision_id))
            return True

    # -- operator state -------------------------------------------------------------------------------------
    def overrides(self) -> dict[str, Override]:
        """Persisted overrides by pool."""
        with self._read() as db:
            rows = db.execute("SELECT pool, mode, replicas, expires_s, reason FROM overrides").fetchall()
        return {p: Override(p, OverrideMode(m), int(n), e, str(r)) for p, m, n, e, r in rows}

    def save_override(self, override: Override) -> None:
        """Persist (or replace) a pool's override."""
        o = override
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO overrides VALUES (?, ?, ?, ?, ?)",
                (o.pool, o.mode.value, o.replicas, o.expires_s, o.reason),
            )

    def delete_override(self, pool: str) -> bool:
        """Remove a pool's override; whether there was one."""
        with self._tx() as db:
            return db.execute("DELETE FROM overrides WHERE pool = ?", (pool,)).rowcount > 0

    def paused(self) -> dict[str, str]:
        """Paused pools (``*`` = all) with the reason given."""
        with self._read() as db:
            return {p: str(r) for p, r in db.execute("SELECT pool, reason FROM paused")}

    def set_paused(self, paused: Mapping[str, str]) -> None:
        """Replace the pause set."""
        with self._tx() as db:
            db.execute("DELETE FROM paused")
            db.executemany("INSERT INTO paused VALUES (?, ?)", list(paused.items()))

    def get_value(self, key: str) -> Any:
        """A runtime setting saved with ``set_value`` (policy, slo, budget, policy_state), or None."""
        with self._read() as db:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_value(self, key: str, value: Any) -> None:
        """Persist a JSON-able runtime setting."""
        text = dumps(scrub(value))
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, text))

    def delete_values(self, keys: Sequence[str]) -> None:
        """Forget runtime settings (e.g. after a config reload made the file authoritative again)."""
        with self._tx() as db:
            db.executemany("DELETE FROM kv WHERE key = ?", [(k,) for k in keys])
