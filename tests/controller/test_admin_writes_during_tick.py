"""Operator changes made while a tick runs: they return without waiting for it, are stored when they return, and
the running tick decides on the settings it started with while the next one decides on the change."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pdscale.controller.admin.controls import Controls
from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import SLO, OverrideMode, PoolRole, PoolSpec, Signals
from pdscale.controller.runtime.loop import Reconciler, TickResult
from pdscale.controller.runtime.plugins import Registry
from pdscale.controller.runtime.store import SqliteStore
from pdscale.testing import FakeActuator, StaticMetricsSource

POOLS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, gpus_per_replica=1, min_replicas=1, max_replicas=8),
    "decode": PoolSpec("decode", PoolRole.DECODE, gpus_per_replica=1, min_replicas=1, max_replicas=8),
}
SIGNALS = Signals(prompt_tokens_per_s=100.0, request_rate_per_s=1.0, running_requests=1.0)
WAIT_S = 5.0


class GatedPolicy:
    """Keeps every pool at 2 replicas; a tick stops inside ``decide`` until the test opens the gate."""

    name = "gated"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.seen: list[PolicyContext] = []

    def decide(self, ctx: PolicyContext) -> Proposal:
        self.seen.append(ctx)
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return Proposal(
            targets=dict.fromkeys(ctx.pools, 2), reasons=dict.fromkeys(ctx.pools, "gated"), state=self.state
        )

    state: ClassVar[dict[str, object]] = {}


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.policy = GatedPolicy()
        self.store = SqliteStore(tmp / "state.db")
        self.rec = Reconciler(
            pools=POOLS,
            source=StaticMetricsSource.ok({"prefill": SIGNALS, "decode": SIGNALS}),
            actuator=FakeActuator({"prefill": 2, "decode": 2}),
            policy=self.policy,
            slo=SLO(1000, 50),
            tick_s=30.0,
            budget_gpus=16,
            guard_settings=GuardSettings(max_step_up=8, max_step_down=8, scale_down_window_s=0.0),
            recorder=self.store,
        )
        self.controls = Controls(self.rec, self.store, Registry())
        self.tick_result: list[TickResult] = []

    def start_tick(self, now: float) -> threading.Thread:
        """A tick in its own thread, stopped inside the policy."""
        self.policy.entered.clear()
        self.policy.gate.clear()
        t = threading.Thread(target=lambda: self.tick_result.append(self.rec.run_once(now)), daemon=True)
        t.start()
        assert self.policy.entered.wait(WAIT_S)
        return t

    def finish_tick(self, t: threading.Thread) -> TickResult:
        self.policy.gate.set()
        t.join(WAIT_S)
        assert not t.is_alive()
        return self.tick_result[-1]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.policy.gate.set()
    s.store.close()


def _returns_while_tick_runs(call: Callable[[], Any]) -> bool:
    done = threading.Event()
    threading.Thread(target=lambda: (call(), done.set()), daemon=True).start()
    return done.wait(WAIT_S)


def test_override_returns_during_a_tick_and_is_stored(setup: Setup) -> None:
    """SetOverride returns while a tick is stopped mid-decision, and the store already holds it."""
    t = setup.start_tick(30.0)
    ok = _returns_while_tick_runs(lambda: setup.controls.set_override("decode", OverrideMode.EXACT, 5, None, 30.0))
    stored = SqliteStore(setup.store.path).overrides() if ok else {}
    setup.finish_tick(t)
    assert ok, "the write waited for the running tick"
    assert stored["decode"].replicas == 5


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.pause("decode", "maintenance"),
        lambda c: c.resume(),
        lambda c: c.update_slo(ttft_ms=500.0),
        lambda c: c.update_budget(12),
        lambda c: c.clear_override("decode"),
    ],
    ids=["pause", "resume", "slo", "budget", "clear_override"],
)
def test_other_writes_return_during_a_tick(setup: Setup, change: Callable[[Controls], Any]) -> None:
    """Pause, Resume, UpdateSLO, UpdateBudget and ClearOverride do not wait for a running tick either."""
    t = setup.start_tick(30.0)
    ok = _returns_while_tick_runs(lambda: change(setup.controls))
    setup.finish_tick(t)
    assert ok, "the write waited for the running tick"


def test_running_tick_keeps_its_settings_and_the_next_sees_the_change(setup: Setup) -> None:
    """A change made mid-tick: the running tick decides on the old SLO, budget and override; the next on the new."""
    t = setup.start_tick(30.0)
    assert _returns_while_tick_runs(lambda: setup.controls.update_slo(ttft_ms=400.0))
    assert _returns_while_tick_runs(lambda: setup.controls.update_budget(10))
    assert _returns_while_tick_runs(lambda: setup.controls.set_override("decode", OverrideMode.EXACT, 5, None, 30.0))
    first = setup.finish_tick(t)
    during = setup.policy.seen[-1]
    assert (during.slo.ttft_ms, during.budget_gpus) == (1000, 16)
    assert first.decision.pools["decode"].target == 2
    setup.policy.gate.set()
    second = setup.rec.run_once(60.0)
    after = setup.policy.seen[-1]
    assert (after.slo.ttft_ms, after.budget_gpus) == (400.0, 10)
    assert second.decision.pools["decode"].target == 5


def test_policy_swapped_mid_tick_does_not_get_the_old_policys_state(setup: Setup) -> None:
    """The state the old policy returns from a tick that ran across SetPolicy is not handed to the new policy."""

    class Remembers(GatedPolicy):
        state: ClassVar[dict[str, object]] = {"old": 1}

    setup.rec.policy = old = Remembers()
    setup.policy = old
    setup.rec.policy_state = {}
    t = setup.start_tick(30.0)
    new = GatedPolicy()
    with setup.rec.settings_lock:
        setup.rec.policy, setup.rec.policy_state = new, {}
    setup.finish_tick(t)
    assert setup.rec.policy is new
    assert "old" not in setup.rec.policy_state
