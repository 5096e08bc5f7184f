"""policies.backlog: queues as backlogs to drain and slowed sequences at the target's speed (Little's law)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pdscale.controller.core.capacity import Correction, ProfileCapacityModel, Workload
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import (
    SLO,
    DataState,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    Signal,
    Signals,
)
from pdscale.controller.policies.backlog import decode_backlog, prefill_backlog, upstream_rate
from pdscale.controller.policies.slo import SloPolicy
from tests.helpers.capacity_profiles import small_profile

MODEL = ProfileCapacityModel(small_profile())
W = Workload(1000.0, 200.0)
SPECS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, 1, 1, 50, cold_start_s=270.0),
    "decode": PoolSpec("decode", PoolRole.DECODE, 1, 1, 50, cold_start_s=270.0),
}
LEAD_S = 300.0  # cold start 270 s + one 30 s tick


def _ctx(prefill: Signals, decode: Signals, ready: int = 2, pools: dict[str, PoolSpec] | None = None) -> PolicyContext:
    pools = pools or SPECS
    sigs = {"prefill": prefill, "decode": decode}
    return PolicyContext(
        now_s=1000.0,
        tick_s=30.0,
        pools=pools,
        states={n: PoolState(n, ready, ready) for n in pools},
        observations={n: PoolObservation(n, DataState.OK, sigs[pools[n].role.value], 1000.0) for n in pools},
        forecasts={},
        slo=SLO(1000.0, 50.0),
        capacity=MODEL,
    )


def _prefill_capacity_rps(ready: int) -> float:
    """Requests per second ``ready`` replicas serve, from the model's busy share at 1 req/s."""
    return 1.0 / MODEL.predict_prefill_busy_share(ready, {Signal.REQUEST_RATE: 1.0}, W)


class TestDecode:
    def test_slowed_running_sequences_count_at_the_sizing_batch_speed(self) -> None:
        """300 sequences running at twice the sizing step's ITL hold 300 x step / ITL slots."""
        b = MODEL.decode_batch(50.0, W)
        step_ms = MODEL.predict_itl_ms(1, float(b), W)
        itl_ms = max(2 * step_ms, 60.0)
        sig = Signals(generation_tokens_per_s=300.0 / (itl_ms / 1e3), itl_mean_ms=itl_ms, request_rate_per_s=1.0)
        c = _ctx(Signals(request_rate_per_s=1.0), sig)
        out, note = decode_backlog(c, "decode", MODEL, W, Correction(), {Signal.DECODE_CONCURRENCY: 300.0})
        assert out[Signal.DECODE_CONCURRENCY] == pytest.approx(300.0 * step_ms / itl_ms)
        assert "running at ITL" in note

    def test_sequences_faster_than_the_sizing_step_count_more_slots(self) -> None:
        """A pool with slack runs faster than the sizing batch: consolidated, its sequences hold step / ITL x more."""
        b = MODEL.decode_batch(50.0, W)
        step_ms = MODEL.predict_itl_ms(1, float(b), W)
        itl_ms = step_ms / 2.0
        sig = Signals(generation_tokens_per_s=3000.0, itl_mean_ms=itl_ms, request_rate_per_s=1.0)
        c = _ctx(Signals(request_rate_per_s=1.0), sig)
        out, _ = decode_backlog(c, "decode", MODEL, W, Correction(), {Signal.DECODE_CONCURRENCY: 120.0})
        assert out[Signal.DECODE_CONCURRENCY] == pytest.approx(240.0)

    def test_a_pool_at_the_sizing_step_keeps_its_concurrency(self) -> None:
        """At the sizing batch's own speed nothing is rescaled."""
        b = MODEL.decode_batch(50.0, W)
        step_ms = MODEL.predict_itl_ms(1, float(b), W)
        sig = Signals(generation_tokens_per_s=3000.0, itl_mean_ms=step_ms, request_rate_per_s=1.0)
        c = _ctx(Signals(request_rate_per_s=1.0), sig)
        out, note = decode_backlog(c, "decode", MODEL, W, Correction(), {Signal.DECODE_CONCURRENCY: 120.0})
        assert out[Signal.DECODE_CONCURRENCY] == 120.0
        assert note == ""

    def test_upstream_rate_scales_what_decode_receives(self) -> None:
        """While prefill is short, decode is sized for the flow prefill will hand over, not what it gets now."""
        sig = Signals(request_rate_per_s=4.0)  # no ITL: only the upstream rule applies
        c = _ctx(Signals(request_rate_per_s=4.0), sig)
        out, note = decode_backlog(c, "decode", MODEL, W, Correction(), {Signal.DECODE_CONCURRENCY: 80.0}, 10.0)
        assert out[Signal.DECODE_CONCURRENCY] == pytest.approx(80.0 * 10.0 / 4.0)
        assert "hand over 10.0 req/s" in note


class TestPrefill:
    def test_an_overloaded_pool_drains_its_projected_backlog_within_one_lead_time(self) -> None:
        """Demand = arrivals + (queue + growth x lead) / lead, growth = arrivals past the ready capacity."""
        cap = _prefill_capacity_rps(2)
        arriving = 2.0 * cap
        c = _ctx(Signals(arrival_rate_per_s=arriving, waiting_requests=600.0), Signals())
        out, note = prefill_backlog(c, "prefill", MODEL, W, Correction(), {Signal.REQUEST_RATE: arriving})
        growth = arriving - cap
        assert out[Signal.REQUEST_RATE] == pytest.approx(arriving + (600.0 + growth * LEAD_S) / LEAD_S)
        assert "600 queued prompts" in note

    def test_a_queue_cleared_within_the_ttft_target_is_no_backlog(self) -> None:
        """A few queued prompts that the spare capacity clears within the TTFT target change nothing."""
        cap = _prefill_capacity_rps(2)
        arriving = 0.5 * cap
        waiting = math.floor(0.5 * (cap - arriving))  # clears in 0.5 s < 1 s target
        c = _ctx(Signals(arrival_rate_per_s=arriving, waiting_requests=float(waiting)), Signals())
        out, note = prefill_backlog(c, "prefill", MODEL, W, Correction(), {Signal.REQUEST_RATE: arriving})
        assert out == {Signal.REQUEST_RATE: arriving}
        assert note == ""

    def test_upstream_is_none_while_prefill_keeps_up(self) -> None:
        """Decode is not rescaled on arrival noise: the upstream rate exists only while prefill is short."""
        c = _ctx(Signals(arrival_rate_per_s=0.5 * _prefill_capacity_rps(2), waiting_requests=0.0), Signals())
        assert upstream_rate(c, "decode", MODEL, W, Correction()) is None

    def test_upstream_is_none_when_two_decode_pools_share_the_model(self) -> None:
        """Which decode pool gets the flow is the router's choice: no upstream rescale then."""
        pools = {**SPECS, "decode-b": replace(SPECS["decode"], name="decode-b")}
        c = _ctx(Signals(arrival_rate_per_s=10 * _prefill_capacity_rps(2), waiting_requests=500.0), Signals(), 2, pools)
        assert upstream_rate(c, "decode", MODEL, W, Correction()) is None


def test_slo_orders_prefill_for_the_backlog() -> None:
    """With 600 queued prompts behind overloaded replicas, slo sizes prefill above the arrival rate's need."""
    cap = _prefill_capacity_rps(2)
    arriving = 2.0 * cap
    pre = Signals(arrival_rate_per_s=arriving, waiting_requests=600.0, isl_mean_tokens=1000.0)
    dec = Signals(running_requests=10.0, request_rate_per_s=cap, osl_mean_tokens=200.0)
    params = {"calibrate": False, "learn_decode_shape": False, "measure_arrival_cv2": False}
    p = SloPolicy(params).decide(_ctx(pre, dec))
    without = MODEL.replicas_needed(SPECS["prefill"], {Signal.REQUEST_RATE: arriving}, SLO(1000.0, 50.0), workload=W)
    assert p.targets["prefill"] > without.replicas
    assert "queued prompts" in p.reasons["prefill"]


def test_unvouched_step_never_raises_the_count() -> None:
    """Faster-than-sizing sequences are not scaled up when the step at the sizing batch is not vouched for."""
    b = MODEL.decode_batch(50.0, W)
    step_ms = MODEL.predict_itl_ms(1, float(b), W)
    sig = Signals(generation_tokens_per_s=3000.0, itl_mean_ms=step_ms / 2.0, request_rate_per_s=1.0)
    c = _ctx(Signals(request_rate_per_s=1.0), sig)
    demand = {Signal.DECODE_CONCURRENCY: 120.0}
    out, _ = decode_backlog(c, "decode", MODEL, W, Correction(), demand, None, step_vouched=False)
    assert out[Signal.DECODE_CONCURRENCY] == 120.0


def test_slo_does_not_vouch_for_a_decode_factor_pinned_at_its_bound() -> None:
    """A decode factor pressed against calibration_min leaves decode sized on the observed count."""
    sig = Signals(generation_tokens_per_s=1500.0, itl_mean_ms=10.0, request_rate_per_s=1.0, osl_mean_tokens=200.0)
    pre = Signals(arrival_rate_per_s=1.0, isl_mean_tokens=1000.0)
    params = {"calibrate": False, "learn_decode_shape": False, "measure_arrival_cv2": False}
    pinned = {"calibration": {"prefill": 1.0, "decode": 0.5, "prefill_samples": 50, "decode_samples": 50}}
    c = replace(_ctx(pre, sig), state=pinned)
    p = SloPolicy(params).decide(c)
    assert "slots at the sizing batch" not in p.reasons["decode"]
    free = SloPolicy(params).decide(replace(c, state={"calibration": {**pinned["calibration"], "decode": 0.8}}))
    assert "slots at the sizing batch" in free.reasons["decode"]
