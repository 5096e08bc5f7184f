"""Contract every MetricsSource honours: static (pdscale.testing), prometheus, simulator.

Each implementation is built through a small harness that can make it healthy or make it lose its data;
the same checks then run over all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from pdscale.controller.core.protocols import MetricsSource
from pdscale.controller.core.types import DataState, PoolObservation, PoolRole, Signals
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.testing import StaticMetricsSource

POOLS: Mapping[str, PoolSettings] = {
    r.value: PoolSettings(name=r.value, role=r, gpus_per_replica=4, max_replicas=4, selector={"role": r.value})
    for r in (PoolRole.PREFILL, PoolRole.DECODE)
}


class Harness(Protocol):
    source: MetricsSource

    def healthy(self) -> None:
        """Make every pool's data available."""

    def lose_data(self) -> None:
        """Make every pool's data unavailable (empty series, a dead cluster ...)."""

    def close(self) -> None:
        """Release what the harness started."""


@dataclass
class StaticHarness:
    source: StaticMetricsSource = field(default_factory=lambda: StaticMetricsSource(POOLS))

    def healthy(self) -> None:
        for p in POOLS:
            self.source.set(p, Signals(request_rate_per_s=1.0, running_requests=2.0, waiting_requests=0.0))

    def lose_data(self) -> None:
        for p in POOLS:
            self.source.set_missing(p, "no data")

    def close(self) -> None:
        self.source.close()


class PrometheusHarness:
    def __init__(self) -> None:
        from pdscale.controller.sources.prometheus import PrometheusMetricsSource
        from tests.helpers.fake_prometheus_api import FakePrometheusAPI

        self.api = FakePrometheusAPI().start()
        self.source = PrometheusMetricsSource(POOLS, {"url": self.api.url, "retries": 0})

    def healthy(self) -> None:
        self.api.rules.clear()
        self.api.set("sum(rate(", 2.0)
        self.api.set("sum(vllm:", 3.0)
        self.api.set("avg(vllm:kv_cache_usage_perc", 0.3)
        self.api.set("count(vllm:", 1.0)
        self.api.set("histogram_quantile(", 0.1)
        self.api.set(") / sum(rate(", 100.0)

    def lose_data(self) -> None:
        self.api.rules.clear()
        self.api.set("vllm:", [])

    def close(self) -> None:
        self.source.close()
        self.api.stop()


class SimulatorHarness:
    def __init__(self) -> None:
        try:
            from pdscale.controller.sources.simulator import SimulatorMetricsSource
            from pdscale.simulator import Cluster, ClusterConfig
            from pdscale.simulator.perf import load_perf_model
            from tests.simulator.cluster_fixtures import poisson_trace
        except ImportError as exc:  # pragma: no cover - depends on the simulator being present
            pytest.skip(f"simulator metrics source unavailable: {exc}")
        self.cluster = Cluster(
            ClusterConfig(perf=load_perf_model("llama-3.1-70b", tp=4), prefill_replicas=1, decode_replicas=1),
            poisson_trace(2.0, 600.0),  # type: ignore[arg-type]
        )
        self.source = SimulatorMetricsSource(POOLS, cluster=self.cluster)
        self.t = 0.0

    def healthy(self) -> None:
        self.t += 60.0
        self.cluster.advance_to(self.t)

    def lose_data(self) -> None:
        pytest.skip("the simulator cannot lose its data")

    def close(self) -> None:
        self.source.close()


HARNESSES = {"static": StaticHarness, "prometheus": PrometheusHarness, "simulator": SimulatorHarness}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h: Harness = HARNESSES[request.param]()
    try:
        yield h
    finally:
        h.close()


def _check_observation(name: str, obs: Any) -> None:
    assert isinstance(obs, PoolObservation)
    assert obs.pool == name
    for value in obs.signals.as_dict().values():
        assert value is None or (math.isfinite(value) and value >= 0)


class TestMetricsSourceContract:
    def test_is_a_metrics_source(self, harness: Harness) -> None:
        """Every implementation satisfies the MetricsSource protocol."""
        assert isinstance(harness.source, MetricsSource)

    def test_fetch_returns_one_observation_per_pool(self, harness: Harness) -> None:
        """A healthy fetch has an observation for every configured pool, keyed by pool name."""
        harness.healthy()
        obs = harness.source.fetch(1000.0)
        assert set(obs) == set(POOLS)
        for name, o in obs.items():
            _check_observation(name, o)

    def test_healthy_data_is_ok_with_a_sample_time(self, harness: Harness) -> None:
        """Healthy pools are OK and carry a sample time no later than now."""
        harness.healthy()
        for o in harness.source.fetch(1000.0).values():
            assert o.state is DataState.OK, o.reason
            assert o.sample_time_s is not None
            assert o.sample_time_s <= 1000.0 + 1e-6 or isinstance(harness, SimulatorHarness)

    def test_lost_data_is_explicitly_missing_never_zero(self, harness: Harness) -> None:
        """Without data a pool is not OK, says why, and reports no zero in place of the missing values."""
        harness.healthy()
        harness.source.fetch(1000.0)
        harness.lose_data()
        for o in harness.source.fetch(1001.0).values():
            assert o.state is not DataState.OK
            assert o.reason
            assert o.signals.request_rate_per_s is None
            assert o.signals.running_requests is None

    def test_close_is_idempotent(self, harness: Harness) -> None:
        """close() may be called twice."""
        harness.source.close()
        harness.source.close()
