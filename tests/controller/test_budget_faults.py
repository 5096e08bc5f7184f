"""The GPU budget holds under faults: random action sequences against the Reconciler, GPUs counted by the actuator.

bench/budget_faults.py runs >= 10,000 sequences and prints the figure; here a seeded few hundred.
"""

from __future__ import annotations

import logging

import pytest
import structlog

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signals
from pdscale.controller.runtime.loop import Reconciler
from pdscale.testing import ManualClock, StaticMetricsSource
from tests.helpers.budget_faults import FaultyActuator, LedgerActuator, RandomPolicy, run_sequence


@pytest.fixture(autouse=True)
def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def test_no_overshoot_in_random_sequences_with_faults() -> None:
    """300 seeded sequences with failing reads, 409s, timeouts, half-done flips and restarts: 0 overshoots."""
    bad = [r for r in (run_sequence(seed) for seed in range(300)) if r.overshoots]
    assert [(r.seed, r.overshoots[0]) for r in bad] == []


def test_the_check_sees_an_overshoot() -> None:
    """With the budget kept from the daemon, the same sequences do overshoot: the measure can fail."""
    assert any(run_sequence(seed, daemon_budget=False).overshoots for seed in range(50))


def _two_pools(ledger_targets: dict[str, int], budget: int, p_read: float) -> tuple[Reconciler, FaultyActuator]:
    import random

    specs = {p: PoolSpec(p, PoolRole(p), 8, 0, 10, cold_start_s=60.0) for p in ("prefill", "decode")}
    clock = ManualClock(1000.0)
    ledger = LedgerActuator(specs, clock, start_s=0.0, drain_s=60.0)
    for p, n in ledger_targets.items():
        ledger.set_target(p, n)
    act = FaultyActuator(ledger, random.Random(0), [budget], p_read=0.0, p_conflict=0.0, p_timeout=0.0)
    sig = Signals(arrival_rate_per_s=5.0, request_rate_per_s=5.0, running_requests=10.0, waiting_requests=0.0)
    rec = Reconciler(
        pools=specs,
        source=StaticMetricsSource.ok({"prefill": sig, "decode": sig}, clock),
        actuator=act,
        policy=RandomPolicy(random.Random(1)),
        slo=SLO(ttft_ms=1000.0, itl_ms=50.0),
        tick_s=15.0,
        budget_gpus=budget,
    )
    return rec, act


def test_a_pool_never_read_blocks_growth() -> None:
    """A restart whose first read of one pool fails grows no other pool (that pool's spend is unknown)."""
    rec, act = _two_pools({"prefill": 1, "decode": 4}, budget=48, p_read=0.0)
    real = act.ledger.replicas

    def failing(pool: str) -> object:
        if pool == "decode":
            raise ActuationError("read decode: 503")
        return real(pool)

    act.replicas = failing  # type: ignore[method-assign]
    before = act.ledger.held_gpus()
    for _ in range(5):
        rec.run_once(1015.0)
    assert act.ledger.held_gpus() <= before


def test_a_failed_shrink_holds_the_rebalance_growth() -> None:
    """When the shrink half of a rebalance fails (its starting replicas stay), its growth half waits."""
    rec, act = _two_pools({"prefill": 1, "decode": 3}, budget=48, p_read=0.0)
    act.ledger.start_s = 600.0
    act.ledger.set_target("prefill", 3)  # two replicas starting
    rec.guard_settings = GuardSettings(scale_down_window_s=0.0, max_step_down=4)
    rec.policy = _Fixed({"prefill": 1, "decode": 5})
    real = act.ledger.set_target

    def refuse_prefill(pool: str, n: int) -> None:
        if pool == "prefill":
            raise ActuationError("set_target(prefill): 409 Conflict")
        real(pool, n)

    act.ledger.set_target = refuse_prefill  # type: ignore[method-assign]
    rec.run_once(1015.0)
    assert act.overshoots == []
    assert act.ledger.targets == {"prefill": 3, "decode": 3}


class _Fixed:
    name = "fixed"

    def __init__(self, targets: dict[str, int]) -> None:
        self.targets = targets

    def decide(self, ctx: object) -> object:
        from pdscale.controller.core.protocols import Proposal

        return Proposal(targets=self.targets, counts_starting=True)
