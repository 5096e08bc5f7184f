"""The shared drain helpers: in-flight counts from engine metrics, and what the loop records of a drain."""

from __future__ import annotations

import math

from pdscale.actuators.drain import DEFAULT_INFLIGHT_METRICS, inflight_from_metrics
from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import DrainResult, Proposal
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signals
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.record import Outcome
from pdscale.testing import FakeActuator, ManualClock, StaticMetricsSource

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 2.0
vllm:num_requests_waiting{engine="0",model_name="llama"} 1.0
vllm:num_requests_swapped 7.0
"""


def test_vllm_running_and_waiting_add_up_over_label_sets() -> None:
    """Running and waiting of every engine label set are summed; other metrics are ignored."""
    assert inflight_from_metrics(VLLM, DEFAULT_INFLIGHT_METRICS) == 6.0


def test_sglang_sample_without_labels_and_with_a_timestamp() -> None:
    """A sample without labels and with a trailing timestamp reads its value, not the timestamp."""
    text = 'sglang:num_running_reqs 4 1700000000000\nsglang:num_queue_reqs{tp_rank="0"} 1\n'
    assert inflight_from_metrics(text, DEFAULT_INFLIGHT_METRICS) == 5.0


def test_no_known_metric_is_unknown_not_zero() -> None:
    """An engine exposing none of the metrics has an unknown count (nan), never an empty one."""
    assert math.isnan(inflight_from_metrics("up 1\n", DEFAULT_INFLIGHT_METRICS))


class _Reporting(FakeActuator):
    def take_drain_result(self, pool: str) -> DrainResult | None:
        return DrainResult(pool, drained=(), timed_out=(f"{pool}-1",), cut_inflight=3)


def test_the_decision_record_says_drain_timeout() -> None:
    """A scale-down whose drain timed out is recorded as applied with drain_timeout and the requests cut."""
    clock = ManualClock(1000.0)
    spec = PoolSpec("decode", PoolRole.DECODE, 8, 0, 8, cold_start_s=60.0)
    act = _Reporting({"decode": 4}, clock=clock)
    sig = Signals(arrival_rate_per_s=1.0, request_rate_per_s=1.0, running_requests=1.0, waiting_requests=0.0)

    class Down:
        name = "down"

        def decide(self, ctx: object) -> object:
            return Proposal(targets={"decode": 3})

    rec = Reconciler(
        pools={"decode": spec},
        source=StaticMetricsSource.ok({"decode": sig}, clock),
        actuator=act,
        policy=Down(),  # type: ignore[arg-type]
        slo=SLO(ttft_ms=1000.0, itl_ms=50.0),
        tick_s=15.0,
        guard_settings=GuardSettings(scale_down_window_s=0.0),
    )
    out = rec.run_once(1015.0).outcomes["decode"]
    assert out.outcome is Outcome.APPLIED
    assert out.detail.startswith("drain_timeout; 3 in-flight requests cut on decode-1")
