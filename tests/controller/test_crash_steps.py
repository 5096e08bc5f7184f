"""kill -9 at every step of set_target and of a role flip: the restart settles each open intent to what the
actuator holds, writes that outcome into the decision record, and never takes its own write for another owner's."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pdscale.actuators.simulator import SimulatorActuator
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import ReplicaInfo, ReplicaState, RoleFlip, Signals
from pdscale.controller.daemon import Daemon
from pdscale.controller.runtime.record import Outcome
from pdscale.controller.runtime.store import IntentOutcome, SqliteStore
from pdscale.simulator import Cluster, ClusterConfig
from pdscale.testing import StaticMetricsSource
from tests.helpers.crash_daemon import two_pool_settings
from tests.simulator.cluster_fixtures import StandInPerf, fixed_trace


class Crash(BaseException):
    """The process dies here (kill -9): nothing after this point runs."""


class Steps:
    """Counts the writes of one actuation; raises Crash before step ``crash_at`` (never when None)."""

    def __init__(self, crash_at: int | None) -> None:
        self.crash_at = crash_at
        self.done = 0

    def step(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self.crash_at is not None and self.done == self.crash_at:
                raise Crash
            out = fn(*args, **kwargs)
            self.done += 1
            return out

        return wrapped


class MemActuator:
    """The cluster's side: targets survive the daemon; ``in_flight`` holds calls that land only on ``land()``."""

    def __init__(self) -> None:
        self.targets = {"prefill": 1, "decode": 1}
        self.calls: list[tuple[str, int]] = []
        self.delay = False
        self.in_flight: list[tuple[str, int]] = []

    def target_size(self, pool: str) -> int:
        return self.targets[pool]

    def replicas(self, pool: str) -> list[ReplicaInfo]:
        return [ReplicaInfo(id=f"{pool}-{i}", pool=pool, state=ReplicaState.READY) for i in range(self.targets[pool])]

    def set_target(self, pool: str, replicas: int) -> None:
        self.calls.append((pool, replicas))
        if self.delay:
            self.in_flight.append((pool, replicas))
        else:
            self.targets[pool] = replicas

    def land(self) -> None:
        for pool, n in self.in_flight:
            self.targets[pool] = n
        self.in_flight.clear()


def _settings(db: Path) -> Any:
    return two_pool_settings(
        str(db),
        {"prefill": 3, "decode": 1},
        "crash-steps",
        guards={"hold_while_starting": False, "scale_down_window_s": 0, "max_step_down": 8},
    )


def _daemon(db: Path, actuator: Any) -> Daemon:
    if not db.exists():  # an earlier run applied the actuator's current targets
        store = SqliteStore(db)
        for pool in ("prefill", "decode"):
            store.set_applied(pool, actuator.target_size(pool))
        store.close()
    busy = Signals(prompt_tokens_per_s=1000.0, request_rate_per_s=1.0, running_requests=10.0, waiting_requests=0.0)
    return Daemon(_settings(db), source=StaticMetricsSource.ok({"prefill": busy, "decode": busy}), actuator=actuator)


def _arm(d: Daemon, steps: Steps, actuator_methods: tuple[str, ...]) -> None:
    for name in ("record", "begin_intent", "set_applied", "finish_intent"):
        setattr(d.store, name, steps.step(getattr(d.store, name)))
    for name in actuator_methods:
        setattr(d.rec.actuator, name, steps.step(getattr(d.rec.actuator, name)))


def _kill(d: Daemon) -> None:
    """What kill -9 leaves: the committed rows, no checkpoint, the lock released by the kernel."""
    d.store._db.close()
    d.store._release()


def _no_pending(db: Path) -> list[str]:
    store = SqliteStore(db)
    try:
        return [
            f"{r.id}:{p}" for r in store.query(limit=100) for p, o in r.outcomes.items() if o.outcome is Outcome.PENDING
        ]
    finally:
        store.close()


# record(pending), begin_intent, set_target, set_applied, finish_intent, record(final); 6 = after the tick
@pytest.mark.parametrize("crash_at", range(7))
def test_set_target_crash_at_every_step_settles_to_the_actuator(tmp_path: Path, crash_at: int) -> None:
    """Killed before step N of set_target, the restart settles the intent to what the actuator holds."""
    db, act = tmp_path / "state.db", MemActuator()
    first = _daemon(db, act)
    _arm(first, Steps(crash_at), ("set_target",))
    with contextlib.suppress(Crash):
        first.rec.run_once(1000.0)
    _kill(first)
    del act.set_target  # the actuator outlives the daemon

    second = _daemon(db, act)
    for res in second.intent_resolutions:
        landed = act.targets[res.intent.pool] == res.intent.target
        assert res.outcome is (IntentOutcome.APPLIED if landed else IntentOutcome.NOT_APPLIED)
        rec = second.store.get(res.intent.decision_id or -1)
        assert rec is not None, "the decision of the actuation in progress was lost"
        want = Outcome.APPLIED if landed else Outcome.NOT_APPLIED
        assert rec.outcomes[res.intent.pool].outcome is want
    assert second.store.open_intents() == []
    second.rec.run_once(1030.0)
    second.rec.run_once(1060.0)
    assert second.rec.external_hold == set()
    assert second.rec.paused == set()
    assert act.targets == {"prefill": 3, "decode": 1}
    assert act.calls.count(("prefill", 3)) == 1, "a landed call was repeated"
    newest = second.store.recent(1)[0].decision.pools["prefill"]
    assert "paused" not in newest.guards
    second.store.close()
    assert _no_pending(db) == []


def test_call_in_flight_at_kill_that_lands_later_is_our_own_write(tmp_path: Path) -> None:
    """A call still in flight at kill -9, settled not applied, that lands after the restart is not held."""
    db, act = tmp_path / "state.db", MemActuator()
    act.delay = True
    first = _daemon(db, act)
    _arm(first, Steps(3), ("set_target",))  # the call went out; the process died before its outcome
    with pytest.raises(Crash):
        first.rec.run_once(1000.0)
    _kill(first)
    del act.set_target

    act.delay = False
    second = _daemon(db, act)
    [res] = second.intent_resolutions
    assert res.outcome is IntentOutcome.NOT_APPLIED
    act.land()
    second.rec.run_once(1030.0)
    assert second.rec.external_hold == set(), "pdscale's own write was taken for another owner's"
    [intent] = [i for i in second.store.intents() if i.id == res.intent.id]
    assert intent.outcome is IntentOutcome.APPLIED
    rec = second.store.get(res.intent.decision_id or -1)
    assert rec is not None
    assert rec.outcomes["prefill"].outcome is Outcome.APPLIED
    assert act.calls == [("prefill", 3)]
    second.store.close()


def test_external_hold_shows_as_paused_and_resume_releases_it(tmp_path: Path) -> None:
    """A pool held after another owner's edit is reported paused, and Resume releases the hold."""
    act = MemActuator()
    d = _daemon(tmp_path / "state.db", act)
    d.rec.run_once(1000.0)
    act.targets["prefill"] = 5  # someone else
    d.rec.run_once(1030.0)
    assert d.rec.external_hold == {"prefill"}
    assert "prefill" in d.rec.paused
    d.controls.resume("prefill")
    d.rec.run_once(1060.0)
    d.rec.run_once(1090.0)
    assert d.rec.external_hold == set()
    assert act.targets["prefill"] == 3
    d.store.close()


def test_override_releases_an_external_hold(tmp_path: Path) -> None:
    """SetOverride on a held pool releases the hold and applies the override."""
    act = MemActuator()
    d = _daemon(tmp_path / "state.db", act)
    d.rec.run_once(1000.0)
    act.targets["prefill"] = 5
    d.rec.run_once(1030.0)
    assert d.rec.external_hold == {"prefill"}
    from pdscale.controller.core.types import OverrideMode

    d.controls.set_override("prefill", OverrideMode.EXACT, 2, None, 1040.0)
    d.rec.run_once(1060.0)
    d.rec.run_once(1090.0)
    assert d.rec.external_hold == set()
    assert act.targets["prefill"] == 2
    d.store.close()


class FlipTo:
    """Moves replicas from prefill to decode until prefill has ``prefill`` of the pools' total."""

    name = "flip_to"

    def __init__(self, prefill: int) -> None:
        self.prefill = prefill

    def decide(self, ctx: PolicyContext) -> Proposal:
        p, d = ctx.states["prefill"].target, ctx.states["decode"].target
        move = max(0, p - self.prefill)
        flips = (RoleFlip("prefill", "decode", move),) if move else ()
        return Proposal(targets={"prefill": p - move, "decode": d + move}, flips=flips)


def _sim() -> SimulatorActuator:
    class Spec:
        def __init__(self, role: str) -> None:
            self.role = role

    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=4, decode_replicas=2, flip_delay_s=0.0),  # type: ignore[arg-type]
        fixed_trace([], prompt=1, output=1),  # type: ignore[arg-type]
    )
    return SimulatorActuator({"prefill": Spec("prefill"), "decode": Spec("decode")}, cluster=cluster)


def _fleet(act: SimulatorActuator) -> dict[str, str]:
    where: dict[str, str] = {}
    for pool in ("prefill", "decode"):
        for r in act.replicas(pool):
            assert r.id not in where, f"replica {r.id} in two roles"
            where[r.id] = pool
    return where


# record(pending), begin_intent, flip replica 1, flip replica 2, set_applied x2, finish_intent, record(final)
@pytest.mark.parametrize("crash_at", range(9))
def test_flip_crash_at_every_step_converges(tmp_path: Path, crash_at: int) -> None:
    """Killed before step N of a two-replica flip, the restart settles it and the fleet converges, none lost."""
    db, act = tmp_path / "state.db", _sim()
    before = _fleet(act)
    first = _daemon(db, act)
    first.rec.policy = FlipTo(2)
    steps = Steps(crash_at)
    _arm(first, steps, ())
    act.cluster.flip_role = steps.step(act.cluster.flip_role)  # type: ignore[method-assign]
    with contextlib.suppress(Crash):
        first.rec.run_once(1000.0)
    _kill(first)
    del act.cluster.flip_role  # the cluster outlives the daemon

    second = _daemon(db, act)
    second.rec.policy = FlipTo(2)
    assert second.store.open_intents() == []
    for res in second.intent_resolutions:
        rec = second.store.get(res.intent.decision_id or -1)
        assert rec is not None
        assert rec.outcomes["prefill"].outcome is not Outcome.PENDING
    for t in (1030.0, 1060.0, 1090.0):
        act.cluster.advance_to(t)
        second.rec.run_once(t)
    assert second.rec.external_hold == set()
    after = _fleet(act)
    assert sorted(after) == sorted(before), "a replica was lost or added"
    assert (act.target_size("prefill"), act.target_size("decode")) == (2, 4)
    second.store.close()
    assert _no_pending(db) == []


def test_failed_state_write_keeps_deciding_and_recovers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A full disk neither kills the loop nor actuates unrecorded; one ERROR, not ready, then all rows written."""
    import sqlite3

    act = MemActuator()
    d = _daemon(tmp_path / "state.db", act)
    full = {"on": True}

    def failing(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if full["on"]:
                raise sqlite3.OperationalError("database or disk is full")
            return fn(*args, **kwargs)

        return wrapped

    for name in ("record", "begin_intent", "set_applied", "finish_intent", "set_outcome"):
        setattr(d.store, name, failing(getattr(d.store, name)))
    d.telemetry.ready = True
    for i in range(4):
        d.rec.run_once(1000.0 + 30 * i)
    assert act.calls == [], "a call was made without its intent on disk"
    assert not d.ready()
    assert capsys.readouterr().out.count("state_write_failed") == 1
    full["on"] = False
    d.rec.run_once(1120.0)
    assert d.ready()
    assert d.store.count() == 5
    assert act.targets["prefill"] == 3
    d.store.close()
