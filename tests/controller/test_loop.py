"""The control loop with fakes: apply, hold on bad data, back off on actuator errors, survive policy bugs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from structlog.testing import capture_logs

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import SLO, ErrorClass, Forecast, PoolRole, PoolSpec, Signal, Signals
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.record import Outcome
from pdscale.controller.runtime.runner import Runner
from pdscale.testing import FakeActuator, ManualClock, StaticMetricsSource

POOLS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, gpus_per_replica=4, min_replicas=1, max_replicas=8),
    "decode": PoolSpec("decode", PoolRole.DECODE, gpus_per_replica=4, min_replicas=1, max_replicas=8),
}
BUSY = Signals(prompt_tokens_per_s=5000.0, request_rate_per_s=4.0, running_requests=50.0, waiting_requests=0.0)


class FixedPolicy:
    """Proposes the same targets every tick."""

    name = "fixed"

    def __init__(self, targets: Mapping[str, int]) -> None:
        self.targets = dict(targets)
        self.calls = 0

    def decide(self, ctx: PolicyContext) -> Proposal:
        self.calls += 1
        return Proposal(targets=self.targets, reasons=dict.fromkeys(self.targets, "fixed"))


class BrokenPolicy:
    """Raises on every call."""

    name = "broken"

    def decide(self, ctx: PolicyContext) -> Proposal:
        raise RuntimeError("boom")


def make(
    policy: object, *, clock: ManualClock | None = None, **kw: object
) -> tuple[Reconciler, FakeActuator, StaticMetricsSource]:
    clock = clock or ManualClock(1000.0)
    source = StaticMetricsSource.ok({"prefill": BUSY, "decode": BUSY})
    actuator = FakeActuator({"prefill": 2, "decode": 2}, clock=clock)
    settings = GuardSettings(max_step_up=8, max_step_down=8, scale_down_window_s=0.0)
    rec = Reconciler(
        pools=POOLS,
        source=source,
        actuator=actuator,
        policy=policy,  # type: ignore[arg-type]
        slo=SLO(1000, 50),
        tick_s=30.0,
        guard_settings=settings,
        **kw,
    )  # type: ignore[arg-type]
    return rec, actuator, source


class TestReconciler:
    def test_decision_is_applied(self) -> None:
        """A policy's proposal reaches the actuator and is recorded as applied."""
        rec, act, _ = make(FixedPolicy({"prefill": 4, "decode": 3}))
        result = rec.run_once(1000.0)
        assert act.target_size("prefill") == 4
        assert act.target_size("decode") == 3
        assert result.outcomes["prefill"].outcome is Outcome.APPLIED
        assert rec.recorder.recent(1)[0].decision.targets() == {"prefill": 4, "decode": 3}

    def test_missing_metrics_hold_and_are_reported(self) -> None:
        """Missing data holds the pool's target and the decision says so."""
        rec, act, source = make(FixedPolicy({"prefill": 1, "decode": 5}))
        source.set_missing("prefill", "query returned no series")
        result = rec.run_once(1000.0)
        assert act.target_size("prefill") == 2
        assert "hold_missing_metrics" in result.decision.pools["prefill"].guards
        assert result.observations["prefill"].reason == "query returned no series"
        assert act.target_size("decode") == 5

    def test_stale_metrics_hold(self) -> None:
        """A sample older than stale_after_s holds the target."""
        rec, act, source = make(FixedPolicy({"prefill": 1, "decode": 1}))
        source.set("prefill", BUSY, sample_time_s=1000.0 - 500.0)
        result = rec.run_once(1000.0)
        assert act.target_size("prefill") == 2
        assert "hold_stale_metrics" in result.decision.pools["prefill"].guards

    def test_source_exception_holds_everything(self) -> None:
        """A metrics source that raises is treated as missing data for every pool."""
        rec, act, source = make(FixedPolicy({"prefill": 6, "decode": 6}))
        source.fail_with = ConnectionError("refused")
        result = rec.run_once(1000.0)
        assert act.target_size("prefill") == 2
        assert act.target_size("decode") == 2
        assert all(o.state.value == "missing" for o in result.observations.values())

    def test_actuator_error_is_logged_backed_off_and_retried(self) -> None:
        """A failed actuation is logged, skipped while backing off, and retried on a later tick."""
        clock = ManualClock(1000.0)
        rec, act, _ = make(FixedPolicy({"prefill": 4, "decode": 2}), clock=clock)
        act.fail_next("prefill", 1, ErrorClass.TRANSIENT)
        with capture_logs() as logs:
            first = rec.run_once(clock.now)
        assert first.outcomes["prefill"].outcome is Outcome.FAILED
        assert any(e["event"] == "actuation_failed" and e["pool"] == "prefill" for e in logs)
        second = rec.run_once(clock.advance(5.0))
        assert second.outcomes["prefill"].outcome is Outcome.BACKOFF
        assert act.target_size("prefill") == 2
        third = rec.run_once(clock.advance(30.0))
        assert third.outcomes["prefill"].outcome is Outcome.APPLIED
        assert act.target_size("prefill") == 4

    def test_policy_exception_leaves_targets_unchanged(self) -> None:
        """A policy that raises does not kill the loop and changes nothing."""
        rec, act, _ = make(BrokenPolicy())
        with capture_logs() as logs:
            result = rec.run_once(1000.0)
        assert result.decision.held
        assert act.target_size("prefill") == 2
        assert act.target_size("decode") == 2
        assert not [c for c in act.calls if c[0] == "set_target"]
        assert any(e["event"] == "policy_failed" for e in logs)

    def test_one_scale_decision_event_per_pool(self) -> None:
        """Each tick logs exactly one scale_decision per pool with inputs and reason."""
        rec, _, _ = make(FixedPolicy({"prefill": 3, "decode": 2}))
        with capture_logs() as logs:
            rec.run_once(1000.0)
        events = [e for e in logs if e["event"] == "scale_decision"]
        assert sorted(e["pool"] for e in events) == ["decode", "prefill"]
        assert all("reason" in e and "ready" in e and "forecast" in e for e in events)

    def test_logged_forecast_is_read_at_the_policys_quantile(self) -> None:
        """scale_decision's forecast= is the quantile the policy's estimate names, not the SLO's p99."""

        class Spread:
            name = "spread"

            def observe(self, t: float, value: float | None) -> None:
                return None

            def predict(self, horizon_s: float) -> Forecast:
                return Forecast(2.0, {0.5: 2.0, 0.9: 3.0, 0.99: 7.0})

        class AtP90(FixedPolicy):
            def decide(self, ctx: PolicyContext) -> Proposal:
                base = super().decide(ctx)
                return Proposal(
                    targets=base.targets, reasons=base.reasons, estimates={"prefill": {"forecast_quantile": 0.9}}
                )

        rec, _, _ = make(AtP90({"prefill": 2, "decode": 2}), forecaster_factory=lambda p, s: Spread())
        with capture_logs() as logs:
            rec.run_once(1000.0)
        by_pool = {e["pool"]: e for e in logs if e["event"] == "scale_decision"}
        assert set(by_pool["prefill"]["forecast"].values()) == {3.0}
        assert by_pool["prefill"]["forecast_quantile"] == 0.9
        assert set(by_pool["decode"]["forecast"].values()) == {7.0}  # no estimate: the SLO quantile (p99)

    def test_shrink_before_grow(self) -> None:
        """Within one tick, pools that shrink are actuated before pools that grow."""
        rec, act, _ = make(FixedPolicy({"prefill": 4, "decode": 1}))
        rec.run_once(1000.0)
        order = [c[1] for c in act.calls if c[0] == "set_target"]
        assert order == ["decode", "prefill"]

    def test_external_change_is_adopted_and_reported(self) -> None:
        """Someone else's edit of a target is detected and reported, not fought."""
        rec, act, _ = make(FixedPolicy({"prefill": 2, "decode": 2}))
        rec.run_once(1000.0)
        act.set_external_target("prefill", 5)
        with capture_logs() as logs:
            rec.run_once(1030.0)
        assert any(e["event"] == "external_change_adopted" and e["theirs"] == 5 for e in logs)

    def test_external_change_hold_mode_stops_acting_on_pool(self) -> None:
        """With adopt off, an external edit pauses pdscale on that pool."""
        rec, act, _ = make(FixedPolicy({"prefill": 3, "decode": 2}), adopt_external_changes=False)
        rec.run_once(1000.0)
        act.set_external_target("prefill", 6)
        result = rec.run_once(1030.0)
        assert act.target_size("prefill") == 6
        assert result.decision.pools["prefill"].guards == ("paused",)

    def test_dry_run_changes_nothing(self) -> None:
        """Dry-run records what it would do and never calls set_target."""
        rec, act, _ = make(FixedPolicy({"prefill": 5, "decode": 5}), dry_run=True)
        result = rec.run_once(1000.0)
        assert result.outcomes["prefill"].outcome is Outcome.DRY_RUN
        assert not [c for c in act.calls if c[0] == "set_target"]


class TestForecastInputs:
    def test_decode_forecaster_gets_littles_law_drivers(self) -> None:
        """A decode-concurrency forecaster with observe_drivers gets request rate and OSL x mean ITL first."""
        seen: list[tuple[str, float, object, object]] = []

        class Recording:
            name = "recording"

            def __init__(self, signal: Signal) -> None:
                self.signal = signal

            def observe_drivers(self, t: float, rate: float | None, decode_s: float | None) -> None:
                seen.append(("drivers", t, rate, decode_s))

            def observe(self, t: float, value: float | None) -> None:
                seen.append((self.signal.value, t, value, None))

            def predict(self, horizon_s: float) -> Forecast:
                return Forecast(1.0, {0.5: 1.0, 0.9: 1.0, 0.99: 1.0})

        sig = Signals(**{**BUSY.as_dict(), "osl_mean_tokens": 200.0, "itl_mean_ms": 40.0})
        rec, _, source = make(FixedPolicy({"prefill": 2, "decode": 2}), forecaster_factory=lambda p, s: Recording(s))
        source.set("decode", sig)
        rec.run_once(1000.0)
        drivers = [e for e in seen if e[0] == "drivers"]
        assert drivers == [("drivers", 1000.0, 4.0, pytest.approx(8.0))]
        assert seen.index(drivers[0]) < seen.index(next(e for e in seen if e[0] == "decode_concurrency"))


class TestRunner:
    def test_runs_ticks_on_the_given_clock(self) -> None:
        """The runner ticks at tick_s of its clock and stops after max_ticks."""
        clock = ManualClock(0.0)
        rec, _, _ = make(FixedPolicy({"prefill": 2, "decode": 2}), clock=clock)
        seen: list[float] = []

        async def no_sleep(_: float) -> None:
            return None

        runner = Runner(rec, tick_s=30.0, clock=clock, before_tick=seen.append, max_ticks=3, wall_per_tick_s=0.0)
        assert asyncio.run(runner.run()) == 0
        assert seen == [0.0, 30.0, 60.0]

    def test_stop_finishes_the_current_tick_and_exits_zero(self) -> None:
        """stop() during a tick lets it finish, then run() returns 0."""
        clock = ManualClock(0.0)
        rec, _, _ = make(FixedPolicy({"prefill": 2, "decode": 2}), clock=clock)
        runner: Runner

        def after(_: object) -> None:
            runner.stop()

        runner = Runner(rec, tick_s=30.0, clock=clock, after_tick=after, wall_per_tick_s=10.0)
        assert asyncio.run(runner.run()) == 0
        assert runner.ticks == 1

    @pytest.mark.timeout(30)
    def test_sigterm_stops_gracefully(self) -> None:
        """SIGTERM makes the runner finish its tick and exit 0."""
        import os
        import signal

        clock = ManualClock(0.0)
        rec, _, _ = make(FixedPolicy({"prefill": 2, "decode": 2}), clock=clock)

        async def main() -> int:
            runner = Runner(rec, tick_s=30.0, clock=clock, wall_per_tick_s=0.05)
            runner.install_signal_handlers()
            asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
            return await runner.run()

        assert asyncio.run(main()) == 0


class _DecodeReadFails(FakeActuator):
    """A fake whose decode reads fail while ``failing`` is set (an apiserver or Ray dashboard outage)."""

    failing = False

    def replicas(self, pool: str):  # type: ignore[no-untyped-def]
        if self.failing and pool == "decode":
            raise ConnectionError("read timed out")
        return super().replicas(pool)

    def held_gpus(self) -> int:
        """GPUs the fleet holds, counted from the actuator's own replicas (starting, ready, draining)."""
        self.failing, was = False, self.failing
        try:
            return sum(4 * len(list(super(_DecodeReadFails, self).replicas(p))) for p in ("prefill", "decode"))
        finally:
            self.failing = was


class TestBudgetUnderReadFailures:
    def test_failed_read_keeps_the_last_counts_so_the_budget_holds(self) -> None:
        """Decode drains 2 of 6 replicas, then its reads fail: prefill may not grow into the GPUs still paid."""
        clock = ManualClock(1000.0)
        actuator = _DecodeReadFails({"prefill": 4, "decode": 6}, clock=clock, drain_s=600.0)
        policy = FixedPolicy({"prefill": 4, "decode": 4})
        rec = Reconciler(
            pools=POOLS,
            source=StaticMetricsSource.ok({"prefill": BUSY, "decode": BUSY}),
            actuator=actuator,
            policy=policy,
            slo=SLO(ttft_ms=1000, itl_ms=50),
            tick_s=30.0,
            budget_gpus=40,
            guard_settings=GuardSettings(max_step_up=8, max_step_down=8, scale_down_window_s=0.0),
        )
        rec.run_once(clock())
        assert actuator.held_gpus() == 40  # 4 prefill + 4 decode ready + 2 decode draining
        actuator.failing = True
        policy.targets = {"prefill": 6, "decode": 4}
        for _ in range(3):
            clock.advance(30.0)
            rec.run_once(clock())
            assert actuator.held_gpus() <= 40


def test_pause_is_not_an_error() -> None:
    """A paused loop holds every pool and logs nothing at ERROR (operators alert on ERROR)."""
    from pdscale.controller.core.decide import ALL_POOLS

    rec, act, _ = make(FixedPolicy({"prefill": 5, "decode": 5}))
    rec.paused = {ALL_POOLS}
    with capture_logs() as logs:
        result = rec.run_once(1000.0)
    assert act.target_size("prefill") == 2
    assert result.decision.held
    assert [e for e in logs if e["log_level"] == "error"] == []


class _SlowReconciler:
    """Each tick takes 150 s of the manual clock (five 30 s ticks): a stalled actuator or a long fit."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.nows: list[float] = []
        self.started: list[float] = []

    def run_once(self, now: float) -> object:
        self.started.append(self.clock())
        self.nows.append(now)
        self.clock.advance(150.0)
        return None


def test_slow_ticks_are_skipped_not_replayed() -> None:
    """After a tick that overran five slots the runner skips them: every tick's now is the clock's time, and no
    burst of catch-up ticks runs on a clock faster than real time."""
    clock = ManualClock(1000.0)
    rec = _SlowReconciler(clock)
    runner = Runner(rec, tick_s=30.0, clock=clock, max_ticks=4)  # type: ignore[arg-type]
    with capture_logs() as logs:
        asyncio.run(runner.run())
    assert rec.nows == rec.started == [1000.0, 1150.0, 1300.0, 1450.0]
    skipped = [e for e in logs if e["event"] == "ticks_skipped"]
    assert [e["count"] for e in skipped] == [4, 4, 4]


class _Returns:
    """Proposes ``value`` for prefill (a plugin bug)."""

    name = "returns"

    def __init__(self, value: object) -> None:
        self.value = value

    def decide(self, ctx: PolicyContext) -> Proposal:
        return Proposal(targets={"prefill": self.value, "decode": 5})  # type: ignore[dict-item]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "3", 2.5, -1, True])
def test_a_policy_returning_a_bad_target_holds_every_pool(value: object) -> None:
    """NaN, inf, None, a string, a fraction, a negative or a bool: the tick holds every pool and names the value;
    the loop survives and the actuator is untouched."""
    rec, act, _ = make(_Returns(value))
    with capture_logs() as logs:
        result = rec.run_once(1000.0)
    assert result.decision.held
    assert (act.target_size("prefill"), act.target_size("decode")) == (2, 2)
    failed = [e for e in logs if e["event"] == "policy_failed"]
    assert failed
    assert "prefill" in failed[0]["error"]


class TestRunnerGate:
    def test_no_tick_while_the_gate_is_closed(self) -> None:
        """A closed gate (a leader-election standby) runs no tick; ticks start once it opens."""
        clock = ManualClock(0.0)
        rec, _, _ = make(FixedPolicy({"prefill": 2, "decode": 2}), clock=clock)
        answers = iter([False, False, False, True, True])
        seen: list[float] = []

        def gate() -> bool:
            clock.advance(1.0)  # each ask is one poll later
            return next(answers)

        runner = Runner(
            rec, tick_s=30.0, clock=clock, before_tick=seen.append, max_ticks=2, wall_per_tick_s=0.0, gate=gate,
            gate_poll_s=0.0,
        )  # fmt: skip
        assert asyncio.run(runner.run()) == 0
        assert seen == [4.0, 34.0]  # the first tick on the 4th ask (t=4), the next a tick_s later


def test_signal_the_source_never_reports_is_not_forecast() -> None:
    """A decode pool whose source exports no KV tokens (the vLLM preset) gets no forecast_failed per tick."""
    from structlog.testing import capture_logs

    from pdscale.controller.core.types import Signals
    from pdscale.controller.runtime.assembly import build
    from pdscale.controller.runtime.plugins import Registry
    from pdscale.controller.runtime.settings import load_settings
    from pdscale.testing import FakeActuator, StaticMetricsSource

    settings = load_settings("examples/simulator.yaml")
    sig = Signals(
        prompt_tokens_per_s=1000.0,
        request_rate_per_s=2.0,
        running_requests=10.0,
        waiting_requests=0.0,
        osl_mean_tokens=200.0,
        itl_mean_ms=20.0,
    )
    source = StaticMetricsSource.ok({p.name: sig for p in settings.pools})
    actuator = FakeActuator({p.name: p.min_replicas for p in settings.pools})
    rec = build(settings, registry=Registry(), source=source, actuator=actuator).reconciler
    with capture_logs() as logs:
        for i in range(40):
            rec.run_once(1000.0 + 30 * i)
    assert [e for e in logs if e["event"] == "forecast_failed"] == []
