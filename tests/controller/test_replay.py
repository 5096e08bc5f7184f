"""Replay: the control loop drives the simulator on a manual clock."""

from __future__ import annotations

from pdscale.actuators.simulator import SimulatorActuator
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec
from pdscale.controller.policies.static import StaticPolicy
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.replay import replay
from pdscale.controller.sources.simulator import SimulatorMetricsSource
from pdscale.simulator import Cluster, ClusterConfig, Pool
from tests.simulator.cluster_fixtures import StandInPerf, poisson_trace


def test_static_policy_resizes_the_simulated_cluster() -> None:
    """A static policy's targets reach the cluster through the actuator and every request completes."""
    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=1, decode_replicas=1, cold_start_s=60.0),  # type: ignore[arg-type]
        poisson_trace(4, 600, seed=5),  # type: ignore[arg-type]
    )
    pools = {
        "prefill": PoolSpec("prefill", PoolRole.PREFILL, 4, 1, 4, cold_start_s=60.0),
        "decode": PoolSpec("decode", PoolRole.DECODE, 4, 1, 4, cold_start_s=60.0),
    }
    rec = Reconciler(
        pools=pools,
        source=SimulatorMetricsSource(pools, cluster=cluster),
        actuator=SimulatorActuator(pools, cluster=cluster),
        policy=StaticPolicy({"replicas": {"prefill": 2, "decode": 3}}),
        slo=SLO(ttft_ms=2000, itl_ms=100),
        tick_s=30.0,
    )
    result = replay(rec, cluster, tick_s=30.0)
    assert cluster.target(Pool.PREFILL) == 2
    assert cluster.target(Pool.DECODE) == 3
    assert result.completed == result.requests
    assert result.scale_actions >= 2
