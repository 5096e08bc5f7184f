"""Table tests for every guard in pdscale.controller.core.guards, and the actuator semantics the guards rely on."""

from __future__ import annotations

import pytest

from pdscale.controller.core.guards import (
    GuardSettings,
    PoolGuardState,
    apply_bounds,
    apply_guards,
    apply_override,
    budget_cost_gpus,
    enforce_budget,
    hold_on_bad_data,
    hold_while_starting,
    limit_step,
    stabilise,
    zero_traffic,
)
from pdscale.controller.core.types import (
    DataState,
    Override,
    OverrideMode,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    ReplicaState,
    Signals,
)
from pdscale.testing import FakeActuator, ManualClock

SPEC = PoolSpec("p", PoolRole.PREFILL, gpus_per_replica=4, min_replicas=1, max_replicas=10)


def ok(t: float | None = 100.0, **signals: float) -> PoolObservation:
    return PoolObservation("p", DataState.OK, Signals(**signals), sample_time_s=t)


class TestHoldOnBadData:
    @pytest.mark.parametrize(
        ("obs", "now", "expected"),
        [
            (ok(100.0), 100.0, (5, None)),
            (ok(100.0), 220.0, (5, None)),
            (ok(100.0), 220.1, (3, "hold_stale_metrics")),
            (PoolObservation.missing("p", "gone"), 100.0, (3, "hold_missing_metrics")),
            (PoolObservation("p", DataState.STALE, sample_time_s=50.0), 100.0, (3, "hold_stale_metrics")),
            (ok(None), 100.0, (5, None)),
        ],
    )
    def test_table(self, obs: PoolObservation, now: float, expected: tuple[int, str | None]) -> None:
        """Missing, stale-marked or too-old samples hold the current target; fresh ones pass the proposal."""
        assert hold_on_bad_data(3, 5, obs, now, stale_after_s=120.0) == expected


class TestZeroTraffic:
    @pytest.mark.parametrize(
        ("current", "proposed", "zero_since", "now", "expected"),
        [
            (4, 2, None, 1000.0, (2, None)),
            (4, 2, 500.0, 1000.0, (4, "zero_traffic_wait")),
            (4, 6, 500.0, 1000.0, (6, None)),
            (4, 2, 100.0, 1000.0, (1, "zero_traffic_to_min")),
            (4, 2, 100.0, 999.9, (4, "zero_traffic_wait")),
        ],
    )
    def test_table(
        self, current: int, proposed: int, zero_since: float | None, now: float, expected: tuple[int, str | None]
    ) -> None:
        """Zero traffic never scales down before the window, and goes to the minimum after it."""
        assert zero_traffic(current, proposed, SPEC, zero_since, now, window_s=900.0) == expected


class TestStabilise:
    @pytest.mark.parametrize(
        ("current", "proposed", "history", "now", "up_w", "down_w", "expected"),
        [
            (5, 3, (), 1000.0, 0.0, 300.0, (3, None)),
            (5, 3, ((800.0, 5),), 1000.0, 0.0, 300.0, (5, "scale_down_window")),
            (5, 3, ((800.0, 4),), 1000.0, 0.0, 300.0, (4, "scale_down_window")),
            (5, 3, ((699.0, 5),), 1000.0, 0.0, 300.0, (3, None)),
            (5, 3, ((700.0, 9),), 1000.0, 0.0, 300.0, (5, "scale_down_window")),
            (5, 8, ((990.0, 6),), 1000.0, 0.0, 300.0, (8, None)),
            (5, 8, ((990.0, 6),), 1000.0, 60.0, 300.0, (6, "scale_up_window")),
            (5, 8, ((900.0, 6),), 1000.0, 60.0, 300.0, (8, None)),
            (5, 5, ((990.0, 1),), 1000.0, 60.0, 300.0, (5, None)),
        ],
    )
    def test_table(
        self,
        current: int,
        proposed: int,
        history: tuple[tuple[float, int], ...],
        now: float,
        up_w: float,
        down_w: float,
        expected: tuple[int, str | None],
    ) -> None:
        """Windows compare timestamps: down to the highest recent proposal, up to the lowest recent one."""
        assert stabilise(current, proposed, history, now, up_w, down_w) == expected

    def test_windows_count_seconds_not_ticks(self) -> None:
        """The same proposals at a faster tick rate do not shorten the scale-down window."""
        history = tuple((1000.0 - 10.0 * k, 5) for k in range(1, 30))  # 29 ticks of 10 s: 290 s
        assert stabilise(5, 3, history, 1000.0, 0.0, 300.0) == (5, "scale_down_window")


class TestLimitStep:
    @pytest.mark.parametrize(
        ("current", "proposed", "expected"),
        [
            (5, 9, (9, None)),
            (5, 10, (9, "max_step_up")),
            (5, 4, (4, None)),
            (5, 2, (4, "max_step_down")),
            (5, 5, (5, None)),
        ],
    )
    def test_table(self, current: int, proposed: int, expected: tuple[int, str | None]) -> None:
        """At most max_up added and max_down removed per tick."""
        assert limit_step(current, proposed, max_up=4, max_down=1) == expected


class TestHoldWhileStarting:
    @pytest.mark.parametrize(
        ("state", "proposed", "expected"),
        [
            (PoolState("p", target=4, ready=2, starting=2), 6, (4, "hold_while_starting")),
            (PoolState("p", target=4, ready=4, starting=0), 6, (6, None)),
            (PoolState("p", target=4, ready=2, starting=2), 3, (3, None)),
            (PoolState("p", target=4, ready=2, starting=2), 4, (4, None)),
        ],
    )
    def test_table(self, state: PoolState, proposed: int, expected: tuple[int, str | None]) -> None:
        """Starting replicas count: no further scale-up until they are ready; scale-down is allowed."""
        assert hold_while_starting(state.target, proposed, state) == expected

    def test_demand_sized_proposal_passes(self) -> None:
        """A proposal that already counts the starting replicas (sized from demand) may raise the target."""
        state = PoolState("p", target=4, ready=2, starting=2)
        assert hold_while_starting(state.target, 6, state, counts_starting=True) == (6, None)


class TestBounds:
    @pytest.mark.parametrize(
        ("proposed", "expected"),
        [(0, (1, "min_replicas")), (1, (1, None)), (10, (10, None)), (11, (10, "max_replicas"))],
    )
    def test_table(self, proposed: int, expected: tuple[int, str | None]) -> None:
        """Targets are clamped to [min_replicas, max_replicas]."""
        assert apply_bounds(proposed, SPEC) == expected


class TestOverride:
    @pytest.mark.parametrize(
        ("override", "proposed", "now", "expected"),
        [
            (None, 5, 0.0, (5, None)),
            (Override("p", OverrideMode.EXACT, 3), 5, 0.0, (3, "override_exact")),
            (Override("p", OverrideMode.MIN, 6), 5, 0.0, (6, "override_min")),
            (Override("p", OverrideMode.MIN, 4), 5, 0.0, (5, None)),
            (Override("p", OverrideMode.MAX, 4), 5, 0.0, (4, "override_max")),
            (Override("p", OverrideMode.MAX, 6), 5, 0.0, (5, None)),
            (Override("p", OverrideMode.EXACT, 3, expires_s=10.0), 5, 10.0, (5, None)),
        ],
    )
    def test_table(
        self, override: Override | None, proposed: int, now: float, expected: tuple[int, str | None]
    ) -> None:
        """Exact, min and max pins win while active; an expired one does nothing."""
        assert apply_override(proposed, override, now) == expected


class TestBudgetCost:
    @pytest.mark.parametrize(
        ("state", "target", "gpus"),
        [
            (PoolState("p", target=3, ready=3), 3, 12),
            (PoolState("p", target=3, ready=3), 5, 20),
            (PoolState("p", target=3, ready=3), 1, 12),
            (PoolState("p", target=3, ready=2, starting=1), 2, 8),
            (PoolState("p", target=2, ready=2, draining=1), 2, 12),
        ],
    )
    def test_table(self, state: PoolState, target: int, gpus: int) -> None:
        """Draining and still-running replicas are paid; starting ones can be cancelled at once."""
        assert budget_cost_gpus(SPEC, state, target) == gpus


def two_pools(min_replicas: int = 1) -> dict[str, PoolSpec]:
    return {
        "prefill": PoolSpec("prefill", PoolRole.PREFILL, 4, min_replicas, 20),
        "decode": PoolSpec("decode", PoolRole.DECODE, 4, min_replicas, 20),
    }


class TestEnforceBudget:
    def test_no_budget_passes(self) -> None:
        """Without a budget the targets pass unchanged."""
        states = {"prefill": PoolState("prefill", 2, 2), "decode": PoolState("decode", 2, 2)}
        assert enforce_budget({"prefill": 9, "decode": 9}, two_pools(), states, None) == (
            {"prefill": 9, "decode": 9},
            {},
        )

    def test_rebalance_shrinks_before_growing(self) -> None:
        """Moving a replica between full pools holds the grower back until the shrinker's replica has left."""
        states = {"prefill": PoolState("prefill", 4, 4), "decode": PoolState("decode", 4, 4)}
        out, fired = enforce_budget({"prefill": 5, "decode": 3}, two_pools(), states, 32)
        assert out == {"prefill": 4, "decode": 3}
        assert fired == {"prefill": "budget_cut_growth"}

    def test_grow_after_drain_finished(self) -> None:
        """Once the shrunk pool's replica is gone, the grower may take its GPUs."""
        states = {"prefill": PoolState("prefill", 4, 4), "decode": PoolState("decode", 3, 3)}
        out, fired = enforce_budget({"prefill": 5, "decode": 3}, two_pools(), states, 32)
        assert out == {"prefill": 5, "decode": 3}
        assert fired == {}

    def test_draining_replicas_still_count(self) -> None:
        """A replica that is still draining keeps its GPUs paid, so growth waits."""
        states = {"prefill": PoolState("prefill", 4, 4), "decode": PoolState("decode", 3, 3, draining=1)}
        out, _ = enforce_budget({"prefill": 5, "decode": 3}, two_pools(), states, 32)
        assert out["prefill"] == 4

    def test_lowered_budget_shrinks_largest(self) -> None:
        """A budget below what is held shrinks the largest pools, never below their minimum."""
        states = {"prefill": PoolState("prefill", 2, 2), "decode": PoolState("decode", 6, 6)}
        out, fired = enforce_budget({"prefill": 2, "decode": 6}, two_pools(), states, 24)
        assert out == {"prefill": 2, "decode": 4}
        assert fired == {"decode": "budget_shrink"}

    def test_minimums_win_over_budget(self) -> None:
        """Pools are never cut below their minimum, even if that overshoots the steady-state budget."""
        states = {"prefill": PoolState("prefill", 2, 2), "decode": PoolState("decode", 2, 2)}
        out, _ = enforce_budget({"prefill": 2, "decode": 2}, two_pools(min_replicas=2), states, 8)
        assert out == {"prefill": 2, "decode": 2}


class TestApplyGuards:
    def run(
        self,
        proposed: int,
        *,
        state: PoolState | None = None,
        obs: PoolObservation | None = None,
        now: float = 100.0,
        memory: PoolGuardState | None = None,
        settings: GuardSettings | None = None,
    ) -> tuple[int, tuple[str, ...], PoolGuardState]:
        return apply_guards(
            now=now,
            spec=SPEC,
            state=state or PoolState("p", target=4, ready=4),
            obs=obs or ok(now, request_rate_per_s=5.0),
            proposed=proposed,
            settings=settings or GuardSettings(),
            memory=memory or PoolGuardState(),
        )

    def test_missing_metrics_never_scale_down(self) -> None:
        """A scale-down proposal on missing data holds the current target."""
        target, fired, _ = self.run(1, obs=PoolObservation.missing("p", "scrape failed"))
        assert (target, fired) == (4, ("hold_missing_metrics",))

    def test_bad_data_is_not_remembered(self) -> None:
        """Proposals made on bad data do not enter the stabilisation history."""
        _, _, memory = self.run(1, obs=PoolObservation.missing("p", "x"))
        assert memory.history == ()

    def test_zero_traffic_goes_to_min_after_window(self) -> None:
        """Zero observed traffic past the window walks the pool to its minimum (one max_step_down per tick)."""
        memory, target, now = PoolGuardState(zero_since_s=100.0), 4, 1000.0
        fired: tuple[str, ...] = ()
        for _ in range(5):
            zero = ok(now, request_rate_per_s=0.0, running_requests=0.0, waiting_requests=0.0)
            target, fired, memory = self.run(
                4, state=PoolState("p", target=target, ready=target), obs=zero, now=now, memory=memory
            )
            now += 30.0
        assert target == 1
        assert "zero_traffic_to_min" in fired

    def test_zero_traffic_waits_for_window(self) -> None:
        """Before the window ends, zero traffic does not scale down."""
        zero = ok(500.0, request_rate_per_s=0.0, running_requests=0.0, waiting_requests=0.0)
        target, fired, _ = self.run(1, obs=zero, now=500.0, memory=PoolGuardState(zero_since_s=100.0))
        assert (target, fired) == (4, ("zero_traffic_wait",))

    def test_traffic_resets_zero_clock(self) -> None:
        """Any traffic clears the zero-traffic timer."""
        _, _, memory = self.run(4, memory=PoolGuardState(zero_since_s=10.0))
        assert memory.zero_since_s is None

    def test_scale_down_one_step_after_window(self) -> None:
        """After a sustained lower proposal the pool steps down by max_step_down."""
        memory = PoolGuardState(history=((-250.0, 2),), since_s=-250.0)
        target, fired, _ = self.run(2, now=100.0, memory=memory)
        assert (target, fired) == (3, ("max_step_down",))

    def test_no_scale_down_before_a_window_is_known(self) -> None:
        """Right after a start (empty memory) a lower proposal waits a whole window, then steps down."""
        target, fired, memory = self.run(2, now=100.0)
        assert (target, fired) == (4, ("scale_down_window",))
        assert memory.since_s == 100.0
        target, fired, _ = self.run(2, now=401.0, memory=memory)
        assert (target, fired) == (3, ("max_step_down",))

    def test_no_repeated_scale_up_while_starting(self) -> None:
        """A second scale-up waits for the replicas still starting."""
        target, fired, _ = self.run(8, state=PoolState("p", target=6, ready=4, starting=2))
        assert (target, fired) == (6, ("hold_while_starting",))


class TestActuatorSemantics:
    def test_cancel_pending_before_draining_running(self) -> None:
        """Scaling down cancels starting replicas first; ready ones drain only after those are gone."""
        clock = ManualClock()
        act = FakeActuator({"p": 2}, clock=clock, start_delay_s=300.0, drain_s=60.0)
        act.set_target("p", 4)
        act.set_target("p", 3)
        states = [r.state for r in act.replicas("p")]
        assert states.count(ReplicaState.STARTING) == 1
        assert states.count(ReplicaState.READY) == 2
        act.set_target("p", 1)
        states = [r.state for r in act.replicas("p")]
        assert states.count(ReplicaState.STARTING) == 0
        assert states.count(ReplicaState.READY) == 1
        assert states.count(ReplicaState.DRAINING) == 1
