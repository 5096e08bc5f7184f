"""End to end with a real Prometheus: exporter -> Prometheus -> PrometheusMetricsSource -> control loop.

Tolerances (docs/prometheus.md): rates within 25 % of the simulator's own counters over the same window,
mean prompt length within 2 %, ready replicas within 1 (a scrape may straddle a change), KV usage within 0.15,
TTFT p50 within 50 % of the simulator's histogram over the same window.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import SLO, DataState, PoolRole
from pdscale.controller.runtime.loop import Reconciler, TickResult
from pdscale.controller.runtime.runner import Runner
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.controller.sources.prometheus import PrometheusMetricsSource
from pdscale.testing import FakeActuator
from tests.helpers.prometheus_server import PrometheusServer, TextExporter, require_prometheus

pytestmark = pytest.mark.integration_prometheus

VLLM_NAMES = (
    "vllm:prompt_tokens_total",
    "vllm:request_success_total",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:request_prompt_tokens_sum",
)


@dataclass
class SyntheticPool:
    """Counters that grow at exact rates with wall time, gauges and a fixed TTFT distribution."""

    request_rate_per_s: float
    isl_tokens: float = 1000.0
    running: float = 5.0
    waiting: float = 1.0
    kv: float = 0.25


@dataclass
class SyntheticVllm:
    """A tiny vLLM-named exporter (text format 0.0.4) for unit-level integration tests."""

    pools: dict[str, SyntheticPool]
    t0: float = field(default_factory=time.time)

    def render(self) -> str:
        elapsed = time.time() - self.t0
        out: list[str] = []
        for name, p in self.pools.items():
            lab = f'pool="{name}",role="{name}",model_name="m"'
            n = p.request_rate_per_s * elapsed
            out += [
                f"vllm:prompt_tokens_total{{{lab}}} {n * p.isl_tokens}",
                f"vllm:request_success_total{{{lab}}} {n}",
                f"vllm:num_requests_running{{{lab}}} {p.running}",
                f"vllm:num_requests_waiting{{{lab}}} {p.waiting}",
                f"vllm:kv_cache_usage_perc{{{lab}}} {p.kv}",
                f"vllm:request_prompt_tokens_sum{{{lab}}} {n * p.isl_tokens}",
                f"vllm:request_prompt_tokens_count{{{lab}}} {n}",
            ]
            # TTFT: 50 % of requests within 0.1 s, all within 0.5 s.
            for le, frac in (("0.1", 0.5), ("0.5", 1.0), ("+Inf", 1.0)):
                out.append(f'vllm:time_to_first_token_seconds_bucket{{{lab},le="{le}"}} {n * frac}')
            out += [
                f"vllm:time_to_first_token_seconds_sum{{{lab}}} {n * 0.2}",
                f"vllm:time_to_first_token_seconds_count{{{lab}}} {n}",
            ]
        return "# TYPE vllm:prompt_tokens_total counter\n" + "\n".join(out) + "\n"


def _pools(*names: str) -> dict[str, PoolSettings]:
    return {
        n: PoolSettings(
            name=n, role=PoolRole(n), gpus_per_replica=1, min_replicas=1, max_replicas=8, selector={"role": n}
        )
        for n in names
    }


@pytest.fixture(scope="module")
def synthetic(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SyntheticVllm, TextExporter, PrometheusServer]]:
    """One exporter and Prometheus shared by this module's tests (the outage test restarts it; it runs last)."""
    require_prometheus()
    model = SyntheticVllm({"prefill": SyntheticPool(4.0), "decode": SyntheticPool(0.0, running=0.0, waiting=0.0)})
    exporter = TextExporter(model.render).start()
    server = PrometheusServer([exporter.target], tmp_path_factory.mktemp("prom") / "tsdb")
    try:
        server.start()
        # rate() over a window the series only partly covers underestimates: wait for a full 5 s window.
        server.wait_for('count_over_time(vllm:request_success_total{role="prefill"}[5s]) >= 5', bool, timeout_s=30.0)
        yield model, exporter, server
    finally:
        server.stop()
        exporter.stop()


def _source(server: PrometheusServer, **params: Any) -> PrometheusMetricsSource:
    base: dict[str, Any] = {
        "url": server.url,
        "rate_window": "5s",
        "retries": 0,
        "timeout_s": 2.0,
        "retry_wait_s": 0.0,
        "required": {"prefill": ["request_rate_per_s", "running_requests"], "decode": ["running_requests"]},
        **params,
    }
    return PrometheusMetricsSource(_pools("prefill", "decode"), base)


def _wait_ok(src: PrometheusMetricsSource, pool: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    obs = None
    while time.monotonic() < deadline:
        obs = src.fetch(time.time())[pool]
        if obs.state is DataState.OK and obs.signals.request_rate_per_s is not None:
            return obs
        time.sleep(0.5)
    raise AssertionError(f"{pool} never OK: {obs}")


class TestRealPrometheus:
    def test_vllm_names_survive_scraping(self, synthetic: tuple[SyntheticVllm, TextExporter, PrometheusServer]) -> None:
        """Prometheus' own name list holds the colon names exactly as the 0.0.4 exposition wrote them."""
        _, _, server = synthetic
        names = set(server.metric_names())
        assert set(VLLM_NAMES) <= names

    def test_source_reads_rates_gauges_and_quantiles(
        self, synthetic: tuple[SyntheticVllm, TextExporter, PrometheusServer]
    ) -> None:
        """Rates, means, gauges and TTFT quantiles match the exporter within tolerance; samples are fresh."""
        _, _, server = synthetic
        src = _source(server)
        obs = _wait_ok(src, "prefill")
        s = obs.signals
        assert s.request_rate_per_s == pytest.approx(4.0, rel=0.1)
        assert s.prompt_tokens_per_s == pytest.approx(4000.0, rel=0.1)
        assert s.isl_mean_tokens == pytest.approx(1000.0, rel=0.02)
        assert (s.running_requests, s.waiting_requests, s.kv_usage_ratio) == (5.0, 1.0, 0.25)
        assert s.ttft_p50_ms is not None
        assert 50.0 <= s.ttft_p50_ms <= 150.0
        assert obs.sample_time_s is not None
        assert time.time() - obs.sample_time_s < 5.0
        src.close()

    def test_zero_traffic_pool_is_ok_with_zero_rate(
        self, synthetic: tuple[SyntheticVllm, TextExporter, PrometheusServer]
    ) -> None:
        """A pool whose counters stand still reports request rate 0 and no means: zero traffic, not missing."""
        _, _, server = synthetic
        src = _source(server)
        _wait_ok(src, "prefill")
        obs = src.fetch(time.time())["decode"]
        assert obs.state is DataState.OK
        assert obs.signals.request_rate_per_s == 0.0
        assert obs.signals.isl_mean_tokens is None
        assert "zero traffic" in obs.reason


class _WantPolicy:
    """Proposes whatever ``want`` says (tests change it between ticks)."""

    name = "want"

    def __init__(self, want: dict[str, int]) -> None:
        self.want = want

    def decide(self, ctx: PolicyContext) -> Proposal:
        return Proposal(targets={p: self.want.get(p, ctx.states[p].target) for p in ctx.pools})


class TestOutage:
    def test_loop_holds_while_prometheus_is_down_and_recovers(
        self, synthetic: tuple[SyntheticVllm, TextExporter, PrometheusServer]
    ) -> None:
        """Prometheus stopped: targets hold and observations say why; restarted on the same port and storage,
        scaling resumes."""
        _, _, server = synthetic
        pools = _pools("prefill", "decode")
        specs = {n: p.to_spec("m") for n, p in pools.items()}
        src = _source(server, rebuild_after_failures=2, backoff_base_s=1.0, backoff_max_s=2.0)
        policy = _WantPolicy({"prefill": 2})
        rec = Reconciler(
            pools=specs,
            source=src,
            actuator=FakeActuator(pools),
            policy=policy,
            slo=SLO(ttft_ms=1000, itl_ms=50),
            tick_s=1.0,
            guard_settings=GuardSettings(scale_down_window_s=0.0, stale_after_s=30.0),
        )
        _wait_ok(src, "prefill")
        assert rec.run_once(time.time()).decision.targets()["prefill"] == 2

        server.stop()
        policy.want["prefill"] = 5
        held = [rec.run_once(time.time()) for _ in range(4)]
        for tick in held:
            assert tick.decision.targets()["prefill"] == 2
            assert tick.observations["prefill"].state is DataState.MISSING
            assert "hold_missing_metrics" in tick.decision.pools["prefill"].guards
        reasons = [t.observations["prefill"].reason for t in held]
        assert "unreachable" in reasons[0]
        assert src.health().rebuilds == 1
        record = rec.recorder.recent(1)[0]
        assert record.inputs["observations"]["prefill"]["reason"] == reasons[-1]

        server.start()
        deadline = time.monotonic() + 30.0
        target = 2
        while time.monotonic() < deadline and target == 2:
            time.sleep(0.5)
            tick = rec.run_once(time.time())
            target = tick.decision.targets()["prefill"]
        assert target > 2, f"no recovery: {tick.observations['prefill']}"
        assert src.health().consecutive_failures == 0
        src.close()


# -- the simulator, the real loop and Prometheus --------------------------------------------------------------

SPEEDUP = 10.0
"""Simulated seconds per wall-clock second."""
TICK_S = 10.0
PHASE1_S, END_S = 120.0, 300.0
RATE1, RATE2 = 2.0, 9.0
ISL, OSL = 2048, 64
SCRAPE_SHIFTS_S = tuple(k * SPEEDUP for k in range(-2, 3))
"""Offsets (simulated seconds) of up to two scrape intervals (1 s wall) either side of a sample time."""


def _step_trace() -> Any:
    from pdscale.simulator.traces import Trace

    rng = np.random.default_rng(7)
    a1 = np.sort(rng.uniform(0.0, PHASE1_S, rng.poisson(RATE1 * PHASE1_S)))
    a2 = np.sort(rng.uniform(PHASE1_S, END_S, rng.poisson(RATE2 * (END_S - PHASE1_S))))
    arrivals = np.concatenate([a1, a2])
    n = len(arrivals)
    return Trace(arrivals, np.full(n, ISL, dtype=np.int64), np.full(n, OSL, dtype=np.int64), "step")


def test_simulated_cluster_through_prometheus_scales_up(tmp_path: Path) -> None:
    """Simulator exporter -> Prometheus -> source -> Reconciler/Runner: observations match ground truth and the
    load step scales a pool up."""
    require_prometheus()
    from pdscale.actuators.simulator import SimulatorActuator
    from pdscale.controller.policies.reactive import ReactivePolicy
    from pdscale.controller.sources.simulator import histogram_quantile
    from pdscale.simulator import Cluster, ClusterConfig, Pool
    from pdscale.simulator.exporter import SimExporter
    from pdscale.simulator.perf import load_perf_model

    cluster = Cluster(
        ClusterConfig(
            perf=load_perf_model("llama-3.1-70b", tp=4), prefill_replicas=1, decode_replicas=1, cold_start_s=30.0
        ),
        _step_trace(),
    )
    lock = threading.RLock()
    exporter = SimExporter(cluster.pool_metrics, pools=[Pool.PREFILL, Pool.DECODE], model_name="m", lock=lock)  # type: ignore[arg-type]
    exporter.start()
    server = PrometheusServer([f"127.0.0.1:{exporter.port}"], tmp_path / "tsdb")
    pools = {
        n: PoolSettings(
            name=n, role=PoolRole(n), gpus_per_replica=4, min_replicas=1, max_replicas=6, selector={"role": n}
        )
        for n in ("prefill", "decode")
    }
    window = "10s"
    params = {
        "url": server.url,
        "rate_window": window,
        "time_scale": SPEEDUP,
        "retries": 1,
        "timeout_s": 2.0,
        "queries": {
            "ready_replicas": "sum(pdscale_sim_ready_replicas{$selector})",
            "prefill_utilization": "sum(rate(pdscale_sim_busy_seconds_total{$selector}[$window])) / "
            "sum(rate(pdscale_sim_serving_seconds_total{$selector}[$window]))",
        },
    }
    history: list[tuple[float, dict[str, Any]]] = []
    t0 = [time.time()]

    def sim_clock() -> float:
        return (time.time() - t0[0]) * SPEEDUP

    stop = threading.Event()

    def advance() -> None:
        while not stop.is_set():
            t = sim_clock()
            with lock:
                cluster.advance_to(t)
                history.append((t, {p.value: cluster.pool_metrics(p) for p in (Pool.PREFILL, Pool.DECODE)}))
            time.sleep(0.1)

    ticks: list[TickResult] = []
    names: set[str] = set()
    fetched_at: dict[float, float] = {}  # the loop's now -> the simulator's clock when that tick fetched
    try:
        server.start()
        server.wait_for('count(vllm:num_requests_running{role="decode"})', bool)
        t0[0] = time.time()  # simulated time starts once Prometheus scrapes the exporter
        src = PrometheusMetricsSource(pools, params)
        rec = Reconciler(
            pools={n: p.to_spec("m") for n, p in pools.items()},
            source=src,
            actuator=SimulatorActuator(pools, cluster=cluster, lock=lock),
            policy=ReactivePolicy({"target_utilization": 0.6, "queue_per_replica": 2.0, "scale_down_window_s": 1e6}),
            slo=SLO(ttft_ms=2000, itl_ms=100),
            tick_s=TICK_S,
            guard_settings=GuardSettings(scale_down_window_s=1e6, stale_after_s=60.0, max_step_up=2),
        )
        mover = threading.Thread(target=advance, name="sim-advance", daemon=True)
        mover.start()
        runner = Runner(
            rec,
            tick_s=TICK_S,
            clock=sim_clock,
            wall_per_tick_s=TICK_S / SPEEDUP,
            before_tick=lambda now: fetched_at.__setitem__(now, sim_clock()),
            after_tick=ticks.append,
            max_ticks=int(END_S / TICK_S),
        )
        asyncio.run(runner.run())
        src.close()
        names = set(server.metric_names())
    finally:
        stop.set()
        server.stop()
        exporter.stop()

    assert set(VLLM_NAMES) <= names
    warm = [t for t in ticks if t.now_s >= 30.0]  # rate() needs two scrapes in its window first
    not_ok = [
        (t.now_s, t.observations[p].reason) for t in warm for p in pools if t.observations[p].state is not DataState.OK
    ]
    assert not not_ok
    ok = [t for t in ticks if t.observations["prefill"].state is DataState.OK]

    def truth_at(t_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Snapshots at t_s and one rate window (in simulated seconds) before it."""
        w = 10.0 * SPEEDUP
        end = min(history, key=lambda h: abs(h[0] - t_s))
        start = min(history, key=lambda h: abs(h[0] - (end[0] - w)))
        return start[1] | {"_t": start[0]}, end[1] | {"_t": end[0]}

    def ttft_p50_s(t_s: float) -> float | None:
        """The true median TTFT over the rate window that ends at t_s (simulated seconds)."""
        m0, m1 = (snap["prefill"] for snap in truth_at(t_s))
        counts = tuple(
            a - b for a, b in zip(m1.ttft_seconds.cumulative_counts, m0.ttft_seconds.cumulative_counts, strict=True)
        )
        return histogram_quantile(0.5, m1.ttft_seconds.bounds, counts)

    checked = 0
    for tick in ok:
        obs = tick.observations["prefill"]
        assert obs.sample_time_s is not None
        sample_sim_s = fetched_at[tick.now_s] - (tick.now_s - obs.sample_time_s)
        if not (100.0 <= sample_sim_s < PHASE1_S or sample_sim_s >= 250.0):
            continue  # warm-up, and windows that straddle the load step or the scale-up that follows
        before, after = truth_at(sample_sim_s)
        span = after["_t"] - before["_t"]
        m0, m1 = before["prefill"], after["prefill"]
        truth_rate = (m1.requests_finished_total - m0.requests_finished_total) / span
        assert obs.signals.request_rate_per_s == pytest.approx(truth_rate, rel=0.25)
        assert obs.signals.isl_mean_tokens == pytest.approx(ISL, rel=0.02)
        assert obs.signals.ready_replicas is not None
        assert abs(obs.signals.ready_replicas - m1.ready_replicas) <= 1
        if obs.signals.ttft_p50_ms is not None:
            # TTFT moves fast while a queue drains, and Prometheus's window ends on scrapes, not on the sample
            # time: the truth is the range of p50s over windows shifted by up to two scrape intervals.
            p50s = [q for shift in SCRAPE_SHIFTS_S if (q := ttft_p50_s(sample_sim_s + shift)) is not None]
            if p50s:
                assert 0.5 * min(p50s) * 1000.0 <= obs.signals.ttft_p50_ms <= 1.5 * max(p50s) * 1000.0
        dec = tick.observations["decode"]
        if dec.state is DataState.OK and dec.signals.kv_usage_ratio is not None:
            assert abs(dec.signals.kv_usage_ratio - after["decode"].kv_cache_usage_perc) <= 0.15
        checked += 1
    assert checked >= 3
    before_step = [t.decision.targets() for t in ticks if t.now_s < PHASE1_S]
    after_step = [t.decision.targets() for t in ticks if t.now_s > PHASE1_S + 30.0]
    assert all(t == {"prefill": 1, "decode": 1} for t in before_step[:3])
    assert max(t["prefill"] + t["decode"] for t in after_step) > 2
    assert math.isfinite(sum(t.duration_s for t in ticks))


def test_saturated_pool_through_prometheus_reports_arrivals(tmp_path: Path) -> None:
    """The vLLM preset's demand on a saturated prefill pool (completions + queue growth, no arrival counter)
    matches the trace's true arrivals, where the completion rate alone reads less than half of them."""
    require_prometheus()
    from pdscale.controller.core.types import Signal
    from pdscale.simulator import Cluster, ClusterConfig, Pool
    from pdscale.simulator.exporter import SimExporter
    from pdscale.simulator.perf import load_perf_model
    from pdscale.simulator.traces import Trace

    rate, duration_s = 9.0, 400.0  # ~2x what one tp4 prefill replica serves at 2048-token prompts
    rng = np.random.default_rng(11)
    arrivals = np.sort(rng.uniform(0.0, duration_s, rng.poisson(rate * duration_s)))
    n = len(arrivals)
    trace = Trace(arrivals, np.full(n, ISL, dtype=np.int64), np.full(n, OSL, dtype=np.int64), "saturated")
    cluster = Cluster(
        ClusterConfig(perf=load_perf_model("llama-3.1-70b", tp=4), prefill_replicas=1, decode_replicas=2), trace
    )
    lock = threading.RLock()
    exporter = SimExporter(cluster.pool_metrics, pools=[Pool.PREFILL, Pool.DECODE], model_name="m", lock=lock)  # type: ignore[arg-type]
    exporter.start()
    server = PrometheusServer([f"127.0.0.1:{exporter.port}"], tmp_path / "tsdb")
    pools = {
        n: PoolSettings(
            name=n, role=PoolRole(n), gpus_per_replica=4, min_replicas=1, max_replicas=4, selector={"role": n}
        )
        for n in ("prefill", "decode")
    }
    params = {"url": server.url, "rate_window": "10s", "time_scale": SPEEDUP, "retries": 1, "timeout_s": 2.0}
    t0 = [time.time()]
    stop = threading.Event()

    def sim_clock() -> float:
        return (time.time() - t0[0]) * SPEEDUP

    def advance() -> None:
        while not stop.is_set():
            with lock:
                cluster.advance_to(min(sim_clock(), duration_s))
            time.sleep(0.05)

    samples: list[tuple[float, Any]] = []
    try:
        server.start()
        server.wait_for('count(vllm:num_requests_running{role="prefill"})', bool)
        t0[0] = time.time()
        mover = threading.Thread(target=advance, name="sim-advance", daemon=True)
        mover.start()
        src = PrometheusMetricsSource(pools, params)
        while sim_clock() < duration_s - 20.0:
            time.sleep(2.0)
            obs = src.fetch(time.time())["prefill"]
            if sim_clock() > 150.0 and obs.state is DataState.OK:
                samples.append((sim_clock(), obs.signals))
        src.close()
    finally:
        stop.set()
        server.stop()
        exporter.stop()

    assert len(samples) >= 5
    window_s = 10.0 * SPEEDUP
    for t_s, signals in samples:
        # Prometheus's window ends on a scrape, up to two scrape intervals (2 s wall) before the fetch.
        truths = [
            float(((arrivals > t_s - lag - window_s) & (arrivals <= t_s - lag)).sum()) / window_s
            for lag in (0.0, SPEEDUP, 2 * SPEEDUP)
        ]
        assert signals.request_rate_per_s < 0.6 * min(truths)
        demand = signals.demand(Signal.REQUEST_RATE)
        assert demand is not None
        assert 0.95 * min(truths) <= demand <= 1.05 * max(truths), (t_s, truths, demand)
