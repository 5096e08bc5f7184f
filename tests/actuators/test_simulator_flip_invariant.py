"""Role flips and scaling through the simulator actuator never leave a pool below min_replicas serving, and a
replica in flight between roles serves (and is reported ready in) neither role until it has switched."""

from __future__ import annotations

import random
from contextlib import nullcontext

import pytest

from pdscale.actuators.simulator import SimulatorActuator
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ReplicaState, RoleFlip
from pdscale.simulator import Cluster, ClusterConfig, Pool
from tests.simulator.cluster_fixtures import StandInPerf, poisson_trace

SIM = {"p": Pool.PREFILL, "d": Pool.DECODE}


class Spec:
    def __init__(self, role: str, min_replicas: int) -> None:
        self.role = role
        self.min_replicas = min_replicas


def serving(cluster: Cluster, pool: Pool) -> set[str]:
    """Replicas the simulator routes new work of `pool` to (ready in it, not draining to flip)."""
    return {v.id for v in cluster.replicas(pool) if v.state.value == "ready"}


def check(act: SimulatorActuator, cluster: Cluster, mins: dict[str, int]) -> None:
    served = {name: serving(cluster, p) for name, p in SIM.items()}
    assert not served["p"] & served["d"], "a replica serves two roles"
    for name, p in SIM.items():
        assert cluster.pool_metrics(p).ready_replicas == len(served[name])
        assert len(served[name]) >= mins[name], f"{name} has {len(served[name])} serving, min {mins[name]}"
        reported = {r.id for r in act.replicas(name) if r.state is ReplicaState.READY}
        assert reported == served[name], "the actuator reports ready a replica the simulator does not route to"


@pytest.mark.parametrize("seed", range(6))
def test_random_flips_and_scaling_keep_min_serving(seed: int) -> None:
    """Seeded random flips, scale-ups, scale-downs and cancels keep every pool at min_replicas serving."""
    rng = random.Random(seed)
    mins = {"p": 1, "d": 1}
    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=2, decode_replicas=2, cold_start_s=60.0, flip_delay_s=20.0),  # type: ignore[arg-type]
        poisson_trace(8, 1500, seed=seed, output_mean=2000),  # type: ignore[arg-type]
    )
    act = SimulatorActuator({n: Spec(p.value, mins[n]) for n, p in SIM.items()}, cluster=cluster)
    t = 0.0
    check(act, cluster, mins)
    for _ in range(60):
        t += rng.uniform(1.0, 40.0)
        cluster.advance_to(t)
        check(act, cluster, mins)
        name = rng.choice(["p", "d"])
        other = "d" if name == "p" else "p"
        move = rng.choice(["flip", "flip", "up", "down", "down", "cancel"])
        if move == "flip":
            with pytest.raises(ActuationError) if len(serving(cluster, SIM[name])) <= mins[name] else nullcontext():
                act.flip_roles(RoleFlip(from_pool=name, to_pool=other, count=rng.randint(1, 3)))
        elif move == "up":
            act.set_target(name, act.target_size(name) + rng.randint(1, 2))
        elif move == "down":
            act.set_target(name, max(0, act.target_size(name) - rng.randint(1, 3)))
        else:
            act.cancel_pending(name, rng.randint(1, 2))
        check(act, cluster, mins)


def test_scale_down_cancels_an_incoming_flip_before_draining_the_last_server() -> None:
    """A pool at 1 serving + 1 flipping in, asked for 1, keeps its serving replica and drops the flip."""
    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=1, decode_replicas=2, flip_delay_s=20.0),  # type: ignore[arg-type]
        poisson_trace(8, 600, seed=1, output_mean=5000),  # type: ignore[arg-type]
    )
    act = SimulatorActuator({n: Spec(p.value, 0) for n, p in SIM.items()}, cluster=cluster)
    cluster.advance_to(120.0)
    server = serving(cluster, Pool.PREFILL)
    act.flip_roles(RoleFlip(from_pool="d", to_pool="p", count=1))
    assert act.target_size("p") == 2
    assert sorted(r.state.value for r in act.replicas("p")) == ["ready", "starting"]
    act.set_target("p", 1)
    assert serving(cluster, Pool.PREFILL) == server
