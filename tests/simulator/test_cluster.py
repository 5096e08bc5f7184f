"""Behaviour of the cluster simulator: serving, conservation, scaling, and results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pdscale.simulator import Cluster, ClusterConfig, DropReason, Mode, Pool, ReplicaState
from tests.simulator.cluster_fixtures import StandInPerf, fixed_trace, poisson_trace


def disagg(trace: object, prefill: int = 2, decode: int = 2, **kw: object) -> Cluster:
    cfg = ClusterConfig(perf=StandInPerf(), prefill_replicas=prefill, decode_replicas=decode, **kw)  # type: ignore[arg-type]
    return Cluster(cfg, trace)  # type: ignore[arg-type]


def colocated(trace: object, replicas: int = 4, **kw: object) -> Cluster:
    cfg = ClusterConfig(perf=StandInPerf(), mode=Mode.COLOCATED, colocated_replicas=replicas, **kw)  # type: ignore[arg-type]
    return Cluster(cfg, trace)  # type: ignore[arg-type]


class TestServing:
    def test_every_request_completes_on_a_sized_cluster(self) -> None:
        """A cluster with enough replicas completes every request of a Poisson trace."""
        result = disagg(poisson_trace(5, 300)).finish()
        assert result.completed == result.requests
        assert result.dropped == 0

    def test_single_request_latency_matches_perf_model(self) -> None:
        """An idle cluster serves one request in prefill + transfer + (n-1) decode steps."""
        perf = StandInPerf()
        result = disagg(fixed_trace([0.0], prompt=1000, output=11)).finish()
        prefill_s = perf.prefill_ms(1000, 1000.0**2, 1) / 1000
        transfer_s = 1000 * perf.kv_bytes_per_token / (400e9 / 8 * 4)
        assert result.ttft_s[0] == pytest.approx(prefill_s + transfer_s)
        step_s = perf.decode_step_ms(1, 1001 + 4.5) / 1000
        assert result.itl_s[0] == pytest.approx(step_s)

    def test_generation_tokens_counted_once(self) -> None:
        """The decode pool's generation counter equals the output tokens of completed requests."""
        trace = poisson_trace(5, 200, seed=3)
        cluster = disagg(trace)
        cluster.finish()
        m = cluster.pool_metrics(Pool.DECODE)
        assert m.generation_tokens_total == trace.output_tokens.sum()
        assert cluster.pool_metrics(Pool.PREFILL).prompt_tokens_total == trace.input_tokens.sum()

    def test_kv_capacity_bounds_admission(self) -> None:
        """Decode admission never reserves more KV than a replica holds; the rest waits."""
        trace = fixed_trace([0.0] * 10, prompt=100_000, output=5000)
        cluster = disagg(trace, prefill=4, decode=1)
        cluster.advance_to(70.0)
        m = cluster.pool_metrics(Pool.DECODE)
        assert m.num_requests_running == 3
        assert m.num_requests_waiting == 7
        assert cluster.finish().completed == 10

    def test_prompt_larger_than_kv_is_dropped_with_reason(self) -> None:
        """A request whose KV can never fit is reported dropped, not lost."""
        trace = fixed_trace([0.0, 1.0], prompt=500_000, output=10)
        result = disagg(trace).finish()
        assert result.drop_reasons == {DropReason.EXCEEDS_KV_CAPACITY.value: 2}

    def test_request_longer_than_the_context_window_is_rejected(self) -> None:
        """Prompt + output past max_model_len is refused with its own reason; one that fits exactly is served."""
        trace = fixed_trace([0.0, 1.0], prompt=4000, output=96)
        fits = disagg(trace, max_model_len=4096).finish()
        too_long = disagg(trace, max_model_len=4095).finish()
        assert fits.completed == 2
        assert too_long.drop_reasons == {DropReason.EXCEEDS_CONTEXT_WINDOW.value: 2}

    def test_context_window_comes_from_the_model(self) -> None:
        """Llama-3.1-70B's 128K window (its model card) rejects a 191K-token prompt that would fit in KV."""
        from pdscale.simulator.perf import load_perf_model

        perf = load_perf_model("llama-3.1-70b", tp=8)
        assert perf.context_window_tokens == 131_072
        trace = fixed_trace([0.0], prompt=191_000, output=10)
        result = Cluster(ClusterConfig(perf=perf, prefill_replicas=1, decode_replicas=1), trace).finish()  # type: ignore[arg-type]
        assert result.drop_reasons == {DropReason.EXCEEDS_CONTEXT_WINDOW.value: 1}

    def test_no_replica_timeout_drops(self) -> None:
        """Requests arriving at a pool with no replica are dropped after the timeout."""
        trace = fixed_trace([0.0, 5.0], prompt=100, output=10)
        result = disagg(trace, prefill=0, no_replica_timeout_s=60.0).finish()
        assert result.drop_reasons == {DropReason.NO_REPLICA.value: 2}

    def test_deterministic(self) -> None:
        """The same trace and config give identical results."""
        a = disagg(poisson_trace(8, 120, seed=7)).finish()
        b = disagg(poisson_trace(8, 120, seed=7)).finish()
        assert np.array_equal(a.ttft_s, b.ttft_s, equal_nan=True)
        assert np.array_equal(a.itl_s, b.itl_s, equal_nan=True)


class TestScaling:
    @pytest.mark.parametrize("mode", [Mode.DISAGG, Mode.COLOCATED])
    def test_more_replicas_never_hurt(self, mode: Mode) -> None:
        """Adding replicas to a static run does not worsen TTFT/ITL p99 or attainment."""
        trace = poisson_trace(12, 300, seed=1)
        if mode is Mode.DISAGG:
            small, big = disagg(trace, 1, 2).finish(), disagg(trace, 3, 4).finish()
        else:
            small, big = colocated(trace, 3).finish(), colocated(trace, 6).finish()
        assert big.ttft_quantile_ms(0.99) <= small.ttft_quantile_ms(0.99)
        assert big.itl_quantile_ms(0.99) <= small.itl_quantile_ms(0.99) * 1.001
        assert big.slo_attainment >= small.slo_attainment

    def test_colocated_itl_tail_worse_than_disagg(self) -> None:
        """On the same trace and GPUs, prefill chunks stall colocated decodes: higher per-token ITL p99."""
        trace = poisson_trace(8, 300, seed=2, prompt_mean=3000)
        split = disagg(trace, 2, 2).finish()
        mono = colocated(trace, 4).finish()
        assert sum(split.gpu_s.values()) == pytest.approx(sum(mono.gpu_s.values()), rel=0.05)
        assert mono.itl_p99_token_ms > 2 * split.itl_p99_token_ms


class TestLifecycle:
    def test_cold_start_delays_capacity(self) -> None:
        """A scaled-up replica serves nothing until its cold start is over."""
        trace = fixed_trace([10.0], prompt=100, output=5)
        cluster = disagg(trace, prefill=0, decode=1, cold_start_s=100.0)
        cluster.set_target(Pool.PREFILL, 1)
        assert [v.state for v in cluster.replicas(Pool.PREFILL)] == [ReplicaState.STARTING]
        cluster.advance_to(99.0)
        assert cluster.pool_metrics(Pool.PREFILL).prompt_tokens_total == 0
        result = cluster.finish()
        assert result.ttft_s[0] >= 90.0

    def test_starting_replicas_cancelled_before_ready_drained(self) -> None:
        """Scale-down cancels starting replicas first and leaves ready ones serving."""
        cluster = disagg(fixed_trace([], prompt=1, output=1), prefill=2, decode=1)
        cluster.set_target(Pool.PREFILL, 4)
        cluster.set_target(Pool.PREFILL, 3)
        states = sorted(v.state.value for v in cluster.replicas(Pool.PREFILL))
        assert states == ["ready", "ready", "starting"]
        cluster.set_target(Pool.PREFILL, 1)
        assert sorted(v.state.value for v in cluster.replicas(Pool.PREFILL)) == ["ready"]

    def test_draining_decode_replica_finishes_its_sequences(self) -> None:
        """A decode replica drained mid-flight completes what it holds before it stops."""
        trace = fixed_trace([0.0, 0.0], prompt=100, output=400)
        cluster = disagg(trace, prefill=1, decode=1)
        cluster.advance_to(2.0)
        cluster.set_target(Pool.DECODE, 0)
        views = cluster.replicas(Pool.DECODE)
        assert [(v.state, v.running) for v in views] == [(ReplicaState.DRAINING, 2)]
        result = cluster.finish()
        assert result.completed == 2
        assert cluster.replicas(Pool.DECODE) == []

    def test_gpu_seconds_charged_while_starting_and_draining(self) -> None:
        """Starting and draining replicas are paid for; stopped ones are not."""
        cluster = disagg(fixed_trace([], prompt=1, output=1), prefill=1, decode=1, cold_start_s=100.0)
        cluster.set_target(Pool.DECODE, 2)
        cluster.advance_to(50.0)
        cluster.set_target(Pool.DECODE, 1)  # cancels the starting one after 50 s
        cluster.advance_to(100.0)
        m = cluster.pool_metrics(Pool.DECODE)
        assert m.gpu_s_total == pytest.approx((100.0 + 50.0) * 4)

    def test_conservation_across_drains_and_flips(self) -> None:
        """No request is lost while pools shrink, grow and flip roles under load."""
        trace = poisson_trace(10, 600, seed=4)
        cluster = disagg(trace, prefill=3, decode=3, cold_start_s=60.0, flip_delay_s=10.0)
        for t, pool, n in [(60, Pool.DECODE, 1), (120, Pool.PREFILL, 1), (200, Pool.DECODE, 4), (300, Pool.PREFILL, 3)]:
            cluster.advance_to(float(t))
            cluster.set_target(pool, n)
        cluster.advance_to(400.0)
        ready_prefill = [v.id for v in cluster.replicas(Pool.PREFILL) if v.state is ReplicaState.READY]
        cluster.flip_role(ready_prefill[0], Pool.DECODE)
        assert cluster.target(Pool.DECODE) == 5
        cluster.advance_to(450.0)
        ready_decode = [v.id for v in cluster.replicas(Pool.DECODE) if v.state is ReplicaState.READY]
        cluster.flip_role(ready_decode[0], Pool.PREFILL)
        result = cluster.finish()
        assert result.completed + result.dropped == result.requests
        assert result.dropped == 0
        assert not np.isnan(result.finish_s).any()
        assert result.scale_actions == 6

    def test_flip_moves_replica_to_other_pool_after_delay(self) -> None:
        """A flipped idle replica serves the other pool after the flip delay, keeping its id."""
        cluster = disagg(fixed_trace([], prompt=1, output=1), prefill=2, decode=1, flip_delay_s=30.0)
        rid = cluster.replicas(Pool.PREFILL)[0].id
        cluster.flip_role(rid, Pool.DECODE)
        assert cluster.target(Pool.PREFILL) == 1
        assert [(v.id, v.state) for v in cluster.replicas(Pool.DECODE) if v.id == rid] == [(rid, ReplicaState.STARTING)]
        cluster.advance_to(31.0)
        assert cluster.pool_metrics(Pool.DECODE).ready_replicas == 2

    def test_flip_of_a_starting_replica_is_refused(self) -> None:
        """Only ready replicas can flip; the error names the replica and its state."""
        cluster = disagg(fixed_trace([], prompt=1, output=1), prefill=1, decode=1)
        cluster.set_target(Pool.PREFILL, 2)
        starting = next(v.id for v in cluster.replicas(Pool.PREFILL) if v.state is ReplicaState.STARTING)
        with pytest.raises(ValueError, match=f"{starting}.*starting"):
            cluster.flip_role(starting, Pool.DECODE)


class TestResults:
    def test_to_json_has_the_summary_keys(self) -> None:
        """to_json carries the documented summary keys with finite numbers."""
        summary = disagg(poisson_trace(3, 60)).finish().to_json()
        for key in (
            "requests", "completed", "dropped", "slo_attainment", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms",
            "itl_p99_ms", "gpu_hours", "prefill_gpu_hours", "decode_gpu_hours", "scale_actions", "sim_wall_s",
        ):  # fmt: skip
            assert math.isfinite(summary[key]), key

    def test_samples_report_utilisation_per_pool(self) -> None:
        """Each loaded sample interval reports a busy share in (0, 1] for both pools."""
        result = disagg(poisson_trace(5, 300), sample_interval_s=30.0).finish()
        loaded = [s for s in result.samples if s.t_s <= 300]
        assert {s.pool for s in loaded} == {Pool.PREFILL, Pool.DECODE}
        assert all(0.0 < s.busy_share <= 1.0 for s in loaded)

    def test_attainment_counts_drops_as_misses(self) -> None:
        """Dropped requests lower SLO attainment."""
        trace = fixed_trace([0.0, 1.0], prompt=500_000, output=10)
        assert disagg(trace).finish().slo_attainment == 0.0


class TestCloseArrivals:
    def test_requests_after_close_never_arrive(self) -> None:
        """After close_arrivals, finish completes the requests that arrived and leaves later ones unarrived."""
        cluster = disagg(fixed_trace([0.0, 1.0, 2.0, 10.0, 11.0], prompt=100, output=5))
        cluster.advance_to(5.0)
        assert cluster.close_arrivals() == 3
        result = cluster.finish()
        assert np.isfinite(result.finish_s[:3]).all()
        assert np.isnan(result.finish_s[3:]).all()
        assert result.dropped == 0

    def test_first_restricts_every_per_request_figure(self) -> None:
        """SimResult.first(n) counts and ranks only the first n requests."""
        cluster = disagg(fixed_trace([0.0, 1.0, 2.0, 10.0, 11.0], prompt=100, output=5))
        cluster.advance_to(5.0)
        arrived = cluster.close_arrivals()
        result = cluster.finish().first(arrived)
        assert (result.requests, result.completed) == (3, 3)
        assert result.slo_attainment == 1.0
