"""The SQLite state store: decisions round-trip, survive restarts, are pruned; intents make actuation crash-safe."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import (
    SLO,
    Decision,
    Override,
    OverrideMode,
    PoolDecision,
    PoolRole,
    PoolSpec,
    RoleFlip,
    Signals,
)
from pdscale.controller.runtime.intents import reconcile_intents
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.record import DecisionRecord, Outcome, PoolOutcome
from pdscale.controller.runtime.store import IntentOutcome, SqliteStore, StoreError
from pdscale.testing import FakeActuator, ManualClock, StaticMetricsSource

POOLS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, gpus_per_replica=4, min_replicas=1, max_replicas=8),
    "decode": PoolSpec("decode", PoolRole.DECODE, gpus_per_replica=4, min_replicas=1, max_replicas=8),
}
BUSY = Signals(prompt_tokens_per_s=5000.0, request_rate_per_s=4.0, running_requests=50.0, waiting_requests=0.0)


def _record(i: int, t: float, pools: tuple[str, ...] = ("prefill", "decode")) -> DecisionRecord:
    decision = Decision(
        time_s=t,
        policy="fixed",
        pools={
            p: PoolDecision(p, 2, 3, 3, "why", ("max_step_up",), {"predicted_ttft_ms": 420.0, "bad": float("nan")})
            for p in pools
        },
        flips=(RoleFlip("decode", "prefill", 1),),
    )
    outcomes = {p: PoolOutcome(Outcome.APPLIED) for p in pools}
    return DecisionRecord(id=i, decision=decision, inputs={"observations": {"x": 1.5}}, outcomes=outcomes)


class FixedPolicy:
    """Proposes the same targets every tick."""

    name = "fixed"

    def __init__(self, targets: Mapping[str, int]) -> None:
        self.targets = dict(targets)

    def decide(self, ctx: PolicyContext) -> Proposal:
        return Proposal(targets=self.targets, reasons=dict.fromkeys(self.targets, "fixed"))


class Crash(BaseException):
    """Stands in for kill -9: nothing after it runs."""


class CrashAfterApply(FakeActuator):
    """Applies the target, then the process 'dies' before the loop hears back."""

    crash = True

    def set_target(self, pool: str, replicas: int) -> None:
        super().set_target(pool, replicas)
        if self.crash:
            raise Crash


class TestDecisions:
    def test_round_trip(self, tmp_path: Path) -> None:
        """A recorded decision reads back with pools, guards, estimates, flips, outcomes and inputs."""
        store = SqliteStore(tmp_path / "s.db")
        store.record(_record(store.next_id(), 10.0))
        got = store.get(1)
        assert got is not None
        assert got.decision.pools["prefill"].guards == ("max_step_up",)
        assert got.decision.pools["prefill"].estimate["predicted_ttft_ms"] == 420.0
        assert got.decision.flips == (RoleFlip("decode", "prefill", 1),)
        assert got.outcomes["decode"].outcome is Outcome.APPLIED
        assert got.inputs == {"observations": {"x": 1.5}}

    def test_ids_continue_after_reopen(self, tmp_path: Path) -> None:
        """A restarted store hands out ids after the last stored one."""
        store = SqliteStore(tmp_path / "s.db")
        for _ in range(3):
            store.record(_record(store.next_id(), 1.0))
        store.close()
        assert SqliteStore(tmp_path / "s.db").next_id() == 4

    def test_query_filters_by_pool_and_time(self, tmp_path: Path) -> None:
        """Pool and time-range filters select only matching decisions, newest first."""
        store = SqliteStore(tmp_path / "s.db")
        store.record(_record(1, 10.0, ("prefill",)))
        store.record(_record(2, 20.0, ("decode",)))
        store.record(_record(3, 30.0, ("prefill", "decode")))
        assert [r.id for r in store.query(pool="prefill")] == [3, 1]
        assert [r.id for r in store.query(since_s=15.0, until_s=25.0)] == [2]
        assert [r.id for r in store.query(before_id=3, limit=1)] == [2]

    def test_cap_prunes_oldest(self, tmp_path: Path) -> None:
        """Beyond max_decisions the oldest decisions are dropped."""
        store = SqliteStore(tmp_path / "s.db", max_decisions=100)
        for _ in range(250):
            store.record(_record(store.next_id(), 1.0))
        store.prune(1.0)
        assert store.count() == 100
        assert store.query(limit=1, oldest_first=True)[0].id == 151

    def test_retention_drops_old_days(self, tmp_path: Path) -> None:
        """Decisions older than retention_days (loop clock) are pruned."""
        store = SqliteStore(tmp_path / "s.db", retention_days=1.0)
        store.record(_record(1, 0.0))
        store.record(_record(2, 2 * 86_400.0))
        store.prune(2 * 86_400.0)
        assert [r.id for r in store.recent()] == [2]

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A state file from an incompatible version fails with a clear error."""
        store = SqliteStore(tmp_path / "s.db")
        store._db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        store.close()
        with pytest.raises(StoreError, match="schema version 99"):
            SqliteStore(tmp_path / "s.db")


class TestOperatorState:
    def test_overrides_and_pause_survive_restart(self, tmp_path: Path) -> None:
        """Overrides and the pause set read back after reopening the file."""
        store = SqliteStore(tmp_path / "s.db")
        store.save_override(Override("decode", OverrideMode.MIN, 3, 99.0, "launch"))
        store.set_paused({"prefill": "maintenance"})
        store.set_value("slo", {"ttft_ms": 500.0})
        store.close()
        again = SqliteStore(tmp_path / "s.db")
        assert again.overrides()["decode"] == Override("decode", OverrideMode.MIN, 3, 99.0, "launch")
        assert again.paused() == {"prefill": "maintenance"}
        assert again.get_value("slo") == {"ttft_ms": 500.0}


class TestIntents:
    def test_open_intent_at_target_is_marked_applied(self, tmp_path: Path) -> None:
        """An intent whose target the actuator already has is confirmed and remembered as applied."""
        store = SqliteStore(tmp_path / "s.db")
        act = FakeActuator({"prefill": 5})
        store.begin_intent("prefill", 5, 1.0)
        [res] = reconcile_intents(store, act)
        assert res.outcome is IntentOutcome.APPLIED
        assert store.last_applied() == {"prefill": 5}
        assert act.calls == []

    def test_open_intent_not_reached_is_not_retried(self, tmp_path: Path) -> None:
        """An intent the actuator never saw is closed as not applied, without calling the actuator."""
        store = SqliteStore(tmp_path / "s.db")
        act = FakeActuator({"prefill": 2})
        store.begin_intent("prefill", 5, 1.0)
        [res] = reconcile_intents(store, act)
        assert res.outcome is IntentOutcome.NOT_APPLIED
        assert act.calls == []
        assert store.open_intents() == []

    def test_open_intent_stopped_midway_is_applied_as_far_as_it_got(self, tmp_path: Path) -> None:
        """Applied 3, intent 1, actuator at 2: the call stopped midway and 2 is remembered as pdscale's own."""
        store = SqliteStore(tmp_path / "s.db")
        store.set_applied("decode", 3)
        store.begin_intent("decode", 1, 1.0)
        [res] = reconcile_intents(store, FakeActuator({"decode": 2}))
        assert res.outcome is IntentOutcome.APPLIED
        assert store.last_applied() == {"decode": 2}

    def test_crash_mid_actuation_resumes_without_repeating(self, tmp_path: Path) -> None:
        """Killed between set_target and its outcome: the restarted loop does not call set_target again."""
        clock = ManualClock(1000.0)
        cluster = CrashAfterApply({"prefill": 2, "decode": 2}, clock=clock)
        source = StaticMetricsSource.ok({"prefill": BUSY, "decode": BUSY})
        policy = FixedPolicy({"prefill": 4, "decode": 2})
        kw = {"pools": POOLS, "source": source, "actuator": cluster, "policy": policy, "slo": SLO(1000, 50)}
        store = SqliteStore(tmp_path / "s.db")
        rec = Reconciler(tick_s=30.0, recorder=store, **kw)  # type: ignore[arg-type]
        with pytest.raises(Crash):
            rec.run_once(clock())
        assert cluster.calls == [("set_target", "prefill", 4)]
        assert len(store.open_intents()) == 1
        # restart: a new process opens the same file and sees the same cluster
        cluster.crash = False
        store2 = SqliteStore(tmp_path / "s.db")
        reconcile_intents(store2, cluster)
        rec2 = Reconciler(tick_s=30.0, recorder=store2, **kw)  # type: ignore[arg-type]
        result = rec2.run_once(clock.advance(30.0))
        assert cluster.calls == [("set_target", "prefill", 4)]
        assert result.outcomes["prefill"].outcome is Outcome.UNCHANGED
        assert [i.outcome for i in store2.intents()] == [IntentOutcome.APPLIED]

    def test_loop_closes_intents_it_opens(self, tmp_path: Path) -> None:
        """A normal tick leaves no open intent and records applied and failed outcomes."""
        clock = ManualClock(1000.0)
        act = FakeActuator({"prefill": 2, "decode": 2}, clock=clock)
        act.fail_next("decode")
        store = SqliteStore(tmp_path / "s.db")
        rec = Reconciler(
            pools=POOLS,
            source=StaticMetricsSource.ok({"prefill": BUSY, "decode": BUSY}),
            actuator=act,
            policy=FixedPolicy({"prefill": 3, "decode": 3}),
            slo=SLO(1000, 50),
            tick_s=30.0,
            recorder=store,
        )
        rec.run_once(clock())
        assert store.open_intents() == []
        assert sorted(i.outcome for i in store.intents() if i.outcome) == [IntentOutcome.APPLIED, IntentOutcome.FAILED]


class TestOneDaemonPerStateFile:
    def test_second_claim_is_refused_naming_the_holder(self, tmp_path: Path) -> None:
        """A second daemon on the same state file is refused with the first one's pid, not left to overwrite."""
        import os

        from pdscale.controller.runtime.store import StoreError

        path = tmp_path / "state.db"
        first = SqliteStore(path, exclusive=True)
        try:
            with pytest.raises(StoreError, match=rf"in use by another pdscale daemon \(pid {os.getpid()}\)"):
                SqliteStore(path, exclusive=True)
        finally:
            first.close()
        SqliteStore(path, exclusive=True).close()  # released on close: a restart gets it back


class TestDamagedStateFile:
    def test_truncated_file_is_refused_not_reset(self, tmp_path: Path) -> None:
        """A zero-length state file (truncated) is an error to act on, not a silent fresh start."""
        from pdscale.controller.runtime.store import StoreError

        path = tmp_path / "state.db"
        path.write_bytes(b"")
        with pytest.raises(StoreError, match="exists but is empty"):
            SqliteStore(path)

    def test_dropped_table_is_refused(self, tmp_path: Path) -> None:
        """A state DB missing a table (an override's or a pause's) is refused, naming the table."""
        import sqlite3

        from pdscale.controller.runtime.store import StoreError

        path = tmp_path / "state.db"
        SqliteStore(path).close()
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE overrides")
        with pytest.raises(StoreError, match=r"lacks table.*overrides"):
            SqliteStore(path)

    def test_scribbled_file_is_refused_with_a_hint(self, tmp_path: Path) -> None:
        """Garbage where the state DB should be gives a one-line StoreError with the fix, not a traceback."""
        from pdscale.controller.runtime.store import StoreError

        path = tmp_path / "state.db"
        path.write_bytes(b"not a database at all" * 100)
        with pytest.raises(StoreError, match="move it aside"):
            SqliteStore(path)

    def test_intact_file_reopens(self, tmp_path: Path) -> None:
        """A healthy state DB written before opens again with its contents."""
        path = tmp_path / "state.db"
        s = SqliteStore(path)
        s.set_applied("prefill", 3)
        s.close()
        again = SqliteStore(path)
        assert again.last_applied() == {"prefill": 3}
        again.close()
