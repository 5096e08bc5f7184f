"""Seasonal history plumbing: the loop feeds it and hands it to the policy; a scenario's history backfills it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pdscale.controller.core.capacity import ProfileCapacityModel
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import Signal
from pdscale.controller.lab.bench import scenario_spec
from pdscale.controller.lab.bench_run import control_loop, history_backfill, oracle_demand_for
from pdscale.controller.lab.scenario import ScenarioError, build_history, build_trace, load_scenario
from pdscale.controller.policies.slo import SloPolicy
from pdscale.forecasting.naive import LastValue
from pdscale.forecasting.seasonal import DAY_S
from tests.controller.test_loop import BUSY, make
from tests.helpers.capacity_profiles import small_profile

SHORT = """name: short
traffic: {lengths: bundled:azure-conv, rate_curve: own, duration_s: 600, rate_scale: 1.0, seed: 3}
tick_s: 30
forecaster: last_value
"""


class Capture:
    """Remembers the context of its last call and holds the targets."""

    name = "capture"

    def __init__(self) -> None:
        self.ctx: PolicyContext | None = None

    def decide(self, ctx: PolicyContext) -> Proposal:
        self.ctx = ctx
        return Proposal(targets={n: s.target for n, s in ctx.states.items()})


def _scenario(tmp_path: Path, extra: str = "") -> object:
    path = tmp_path / "short.yaml"
    path.write_text(SHORT + extra, encoding="utf-8")
    return load_scenario(path)


class TestLoop:
    def test_each_tick_feeds_the_seasonal_history_the_policy_reads(self) -> None:
        """After a tick at t=1000 the policy's context holds the decode concurrency observed then (50)."""
        policy = Capture()
        rec, _, _ = make(policy, forecaster_factory=lambda pool, sig: LastValue())
        rec.run_once(1000.0)
        assert policy.ctx is not None
        hist = policy.ctx.seasonal["decode"][Signal.DECODE_CONCURRENCY]
        assert hist.values(1000.0, 1000.0)[0] == BUSY.running_requests

    def test_backfill_lands_in_the_history(self) -> None:
        """Two past values a day back are held; a pool signal that is not forecast takes none."""
        policy = Capture()
        rec, _, _ = make(policy, forecaster_factory=lambda pool, sig: LastValue())
        assert rec.seasonal.backfill("prefill", Signal.REQUEST_RATE, [1000.0 - DAY_S, 1010.0 - DAY_S], [3.0, 5.0]) == 2
        assert rec.seasonal.backfill("prefill", Signal.DECODE_CONCURRENCY, [0.0], [1.0]) == 0
        rec.run_once(1000.0)
        assert policy.ctx is not None
        got = policy.ctx.seasonal["prefill"][Signal.REQUEST_RATE].values(1000.0 - DAY_S, 1000.0 - DAY_S)
        assert got[0] == 4.0

    def test_recorded_decision_carries_the_floor(self) -> None:
        """slo in the loop, yesterday's load 20x today's from 2 minutes on: the recorded decode decision (what
        ``admin explain`` reads) names the floor in its reason and holds it in its estimates."""
        model = ProfileCapacityModel(small_profile())
        rec, _, _ = make(SloPolicy(), forecaster_factory=lambda pool, sig: LastValue(), capacity=model)
        now = 1000.0 + 1800.0
        times = [float(t) for t in range(1000, 1000 + 3600, 30)]
        for sig, level in ((Signal.REQUEST_RATE, BUSY.request_rate_per_s), (Signal.DECODE_CONCURRENCY, 50.0)):
            past = [level * (20.0 if t >= now + 120.0 else 1.0) for t in times]
            rec.seasonal.backfill("decode", sig, [t - DAY_S for t in times], past)  # type: ignore[arg-type]
        for t in range(1000, int(now) + 1, 30):
            rec.run_once(float(t))
        decision = rec.recorder.recent(1)[0].decision.pools["decode"]
        assert "seasonal floor in 330 s: decode_concurrency 50 -> 1e+03 (1d ago 1e+03 x1.00)" in decision.reason
        assert decision.estimate["seasonal_floor_decode_concurrency"] == 1000.0


class TestScenarioHistory:
    def test_no_history_by_default(self, tmp_path: Path) -> None:
        """A scenario without a history section backfills nothing."""
        assert build_history(_scenario(tmp_path)) == []  # type: ignore[arg-type]

    def test_repeat_gives_one_fresh_draw_per_past_day(self, tmp_path: Path) -> None:
        """days 2, repeat: the replayed window a day and two days back, each its own draw of the same curve."""
        sc = _scenario(tmp_path, "history: {days: 2, source: repeat}\n")
        past = build_history(sc)  # type: ignore[arg-type]
        today = build_trace(sc)
        assert [off for off, _ in past] == [-DAY_S, -2 * DAY_S]
        for _, trace in past:
            assert not np.array_equal(trace.arrival_s, today.arrival_s)
            assert abs(len(trace.arrival_s) - len(today.arrival_s)) < 0.2 * len(today.arrival_s)

    def test_curve_history_must_fit_in_the_curve(self, tmp_path: Path) -> None:
        """source curve with the replay at the curve's start: rejected, naming the field and the fix."""
        with pytest.raises(ScenarioError, match=r"history: 1 days of source 'curve' need traffic\.curve_start_s"):
            _scenario(tmp_path, "history: {days: 1, source: curve}\n")

    def test_backfill_is_the_past_days_demand_per_tick(self, tmp_path: Path) -> None:
        """Each role's signals, at the middle of each tick a day back, equal to the oracle binning of that day."""
        sc = _scenario(tmp_path, "history: {days: 1}\n")
        spec = scenario_spec(sc)  # type: ignore[arg-type]
        past = build_history(sc)  # type: ignore[arg-type]
        got = history_backfill(past, spec)
        assert set(got) == {
            ("prefill", Signal.PREFILL_TPS),
            ("prefill", Signal.REQUEST_RATE),
            ("decode", Signal.DECODE_CONCURRENCY),
            ("decode", Signal.KV_TOKENS),
            ("decode", Signal.REQUEST_RATE),
        }
        times, values = got[("decode", Signal.DECODE_CONCURRENCY)]
        expected = oracle_demand_for(past[0][1], spec).series[Signal.DECODE_CONCURRENCY]
        assert times[0] == -DAY_S + 15.0
        assert times[1] - times[0] == 30.0
        assert values == pytest.approx(list(expected))

    def test_bench_loop_starts_with_the_backfill(self, tmp_path: Path) -> None:
        """The bench's control loop holds yesterday's request rate before its first tick."""
        sc = _scenario(tmp_path, "history: {days: 1}\n")
        spec = scenario_spec(sc)  # type: ignore[arg-type]
        backfill = history_backfill(build_history(sc), spec)  # type: ignore[arg-type]
        _, rec = control_loop(build_trace(sc), spec, "slo", {"prefill": 1, "decode": 1}, backfill=backfill)
        hist = rec.seasonal.get("prefill", Signal.REQUEST_RATE)
        held = hist.values(-DAY_S, -DAY_S + 540.0)
        assert np.isfinite(held).all()
        assert float(held.mean()) > 0
