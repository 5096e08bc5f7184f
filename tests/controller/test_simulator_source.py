"""SimulatorMetricsSource: observations shaped like the Prometheus source's, from counter and histogram deltas."""

from __future__ import annotations

import pytest

from pdscale.controller.core.types import DataState, Signal, Signals
from pdscale.controller.sources.simulator import SimulatorMetricsSource, histogram_quantile
from pdscale.simulator import Cluster, ClusterConfig, Pool
from tests.simulator.cluster_fixtures import StandInPerf, fixed_trace, poisson_trace


class Spec:
    def __init__(self, role: str) -> None:
        self.role = role


def source_for(trace: object) -> tuple[Cluster, SimulatorMetricsSource]:
    cluster = Cluster(ClusterConfig(perf=StandInPerf(), prefill_replicas=2, decode_replicas=2), trace)  # type: ignore[arg-type]
    src = SimulatorMetricsSource({"prefill": Spec("prefill"), "decode": Spec("decode")}, cluster=cluster)
    return cluster, src


class TestHistogramQuantile:
    def test_interpolates_within_bucket(self) -> None:
        """Like PromQL: linear within the bucket holding the rank."""
        assert histogram_quantile(0.5, (1.0, 2.0), (0.0, 10.0, 10.0)) == pytest.approx(1.5)

    def test_empty_is_missing(self) -> None:
        """No observations gives None, not zero."""
        assert histogram_quantile(0.99, (1.0,), (0.0, 0.0)) is None


class TestSimulatorMetricsSource:
    def test_rates_from_counter_deltas(self) -> None:
        """prompt_tokens_per_s over a window equals the prompt tokens processed in it / its length."""
        trace = fixed_trace([1.0, 61.0], prompt=1000, output=5)
        cluster, src = source_for(trace)
        cluster.advance_to(60.0)
        first = src.fetch(60.0)["prefill"]
        cluster.advance_to(120.0)
        second = src.fetch(120.0)["prefill"]
        assert first.state is DataState.OK
        assert first.signals.prompt_tokens_per_s == pytest.approx(1000 / 60)
        assert second.signals.prompt_tokens_per_s == pytest.approx(1000 / 60)
        assert second.sample_time_s == 120.0

    def test_quantiles_from_window_only(self) -> None:
        """A window without new first tokens reports TTFT quantiles as missing."""
        cluster, src = source_for(fixed_trace([1.0], prompt=1000, output=5))
        cluster.advance_to(60.0)
        assert src.fetch(60.0)["decode"].signals.ttft_p99_ms is not None
        cluster.advance_to(120.0)
        assert src.fetch(120.0)["decode"].signals.ttft_p99_ms is None

    def test_gauges_and_replicas(self) -> None:
        """Running requests, KV usage and ready replicas come from the cluster's gauges."""
        cluster, src = source_for(poisson_trace(10, 120))
        cluster.advance_to(60.0)
        obs = src.fetch(60.0)["decode"].signals
        m = cluster.pool_metrics(Pool.DECODE)
        assert obs.running_requests == m.num_requests_running > 0
        assert obs.ready_replicas == 2.0
        assert obs.kv_usage_ratio == pytest.approx(m.kv_cache_usage_perc)

    def test_no_time_passed_is_missing_first(self) -> None:
        """A fetch before any simulated time passes is explicit missing data."""
        _, src = source_for(fixed_trace([], prompt=1, output=1))
        assert src.fetch(0.0)["prefill"].state is DataState.MISSING

    def test_means_and_generation_rate(self) -> None:
        """Mean TTFT/ITL come from histogram sums and counts, generated tokens/s from the counter delta."""
        cluster, src = source_for(poisson_trace(10, 120))
        cluster.advance_to(60.0)
        obs = src.fetch(60.0)["decode"].signals
        m = cluster.pool_metrics(Pool.DECODE)
        assert obs.generation_tokens_per_s == pytest.approx(m.generation_tokens_total / 60.0)
        assert obs.itl_mean_ms == pytest.approx(m.itl_seconds.sum / m.itl_seconds.count * 1000.0)
        assert obs.ttft_mean_ms == pytest.approx(m.ttft_seconds.sum / m.ttft_seconds.count * 1000.0)

    def test_mean_concurrency_by_littles_law(self) -> None:
        """Generated tokens/s x mean ITL is the time-averaged number of running sequences of the window."""
        cluster, src = source_for(poisson_trace(10, 600))
        samples = []
        src.fetch(0.0)
        cluster.advance_to(300.0)
        src.fetch(300.0)
        for k in range(1, 121):
            cluster.advance_to(300.0 + k * 0.5)
            samples.append(cluster.pool_metrics(Pool.DECODE).num_requests_running)
        obs = src.fetch(360.0)["decode"].signals
        assert obs.mean_running_requests == pytest.approx(sum(samples) / len(samples), rel=0.1)


class TestDemandIsArrivals:
    def test_saturated_pool_reports_arrivals_not_its_throughput(self) -> None:
        """A prefill pool at ~3x its capacity reports the true arrival rate as demand (within 5%), not its output."""
        rate, prompt, t0, t1 = 20.0, 2048, 120.0, 240.0
        trace = poisson_trace(rate, 300.0, seed=7)
        trace = fixed_trace(list(trace.arrival_s), prompt=prompt, output=20)
        cluster = Cluster(ClusterConfig(perf=StandInPerf(), prefill_replicas=1, decode_replicas=4), trace)  # type: ignore[arg-type]
        src = SimulatorMetricsSource({"prefill": Spec("prefill"), "decode": Spec("decode")}, cluster=cluster)
        cluster.advance_to(t0)
        src.fetch(t0)
        cluster.advance_to(t1)
        obs = src.fetch(t1)["prefill"]
        arrived = int(((trace.arrival_s > t0) & (trace.arrival_s <= t1)).sum())  # counted from the trace itself
        true_rate = arrived / (t1 - t0)
        assert obs.signals.request_rate_per_s is not None
        assert obs.signals.request_rate_per_s < 0.5 * true_rate  # saturated: it serves well under the arrivals
        assert obs.signals.demand(Signal.REQUEST_RATE) == pytest.approx(true_rate, rel=0.05)
        assert obs.signals.demand(Signal.PREFILL_TPS) == pytest.approx(true_rate * prompt, rel=0.05)

    def test_demand_falls_back_to_served_rates_without_arrival_counters(self) -> None:
        """A source with no arrival signal (an engine exporting none) still gives demand: what was served."""
        s = Signals(prompt_tokens_per_s=500.0, request_rate_per_s=2.0)
        assert s.demand(Signal.PREFILL_TPS) == 500.0
        assert s.demand(Signal.REQUEST_RATE) == 2.0


class TestPrefillBatchSignals:
    def test_batch_tokens_and_time_of_lone_prompts(self) -> None:
        """Prompts arriving one at a time run as one-prompt batches: their tokens and their prefill time."""
        cluster, src = source_for(fixed_trace([1.0, 11.0, 21.0], prompt=1000, output=5))
        cluster.advance_to(60.0)
        s = src.fetch(60.0)["prefill"].signals
        assert s.prefill_batch_tokens_mean == pytest.approx(1000.0)
        assert s.prefill_batch_ms_mean == pytest.approx(10.0 + 0.08 * 1000 + 1e-6 * 1000**2)
        assert src.fetch(60.0)["decode"].signals.prefill_batch_tokens_mean is None

    def test_batched_prompts_share_a_batch(self) -> None:
        """Six prompts arriving at once on two replicas queue behind the first batches: a batch carries > 1 prompt."""
        cluster, src = source_for(fixed_trace([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], prompt=1000, output=5))
        cluster.advance_to(60.0)
        s = src.fetch(60.0)["prefill"].signals
        assert s.prefill_batch_tokens_mean is not None
        assert s.prefill_batch_tokens_mean > 1000.0

    def test_no_batch_in_the_window_is_missing(self) -> None:
        """A window without prefill batches reports the batch signals as missing, not zero."""
        cluster, src = source_for(fixed_trace([1.0], prompt=1000, output=5))
        cluster.advance_to(60.0)
        src.fetch(60.0)
        cluster.advance_to(120.0)
        assert src.fetch(120.0)["prefill"].signals.prefill_batch_ms_mean is None
