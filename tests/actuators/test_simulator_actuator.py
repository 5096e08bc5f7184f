"""SimulatorActuator: the Actuator protocol and its optional capabilities over a simulated cluster."""

from __future__ import annotations

import pytest

from pdscale.actuators.simulator import SimulatorActuator
from pdscale.controller.core.protocols import ActuationError, Actuator, can_cancel_pending, can_drain, can_flip_roles
from pdscale.controller.core.types import ReplicaState, RoleFlip
from pdscale.simulator import Cluster, ClusterConfig
from tests.simulator.cluster_fixtures import StandInPerf, fixed_trace

POOLS = {"p": "prefill", "d": "decode"}


class Spec:
    def __init__(self, role: str) -> None:
        self.role = role


def make(prefill: int = 2, decode: int = 2) -> SimulatorActuator:
    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=prefill, decode_replicas=decode, flip_delay_s=10.0),  # type: ignore[arg-type]
        fixed_trace([], prompt=1, output=1),  # type: ignore[arg-type]
    )
    return SimulatorActuator({n: Spec(r) for n, r in POOLS.items()}, cluster=cluster)


class TestSimulatorActuator:
    def test_implements_protocol_and_capabilities(self) -> None:
        """It is an Actuator that can flip roles, drain and cancel."""
        act = make()
        assert isinstance(act, Actuator)
        assert can_flip_roles(act)
        assert can_drain(act)
        assert can_cancel_pending(act)

    def test_set_target_is_idempotent(self) -> None:
        """Setting the same target twice starts replicas once."""
        act = make()
        act.set_target("d", 4)
        act.set_target("d", 4)
        assert act.target_size("d") == 4
        assert sorted(r.state for r in act.replicas("d")).count(ReplicaState.STARTING) == 2

    def test_cancel_pending_only_cancels_starting(self) -> None:
        """cancel_pending removes starting replicas and reports how many."""
        act = make()
        act.set_target("p", 3)
        assert act.cancel_pending("p", 5) == 1
        assert [r.state for r in act.replicas("p")] == [ReplicaState.READY] * 2

    def test_flip_moves_a_replica_between_pools(self) -> None:
        """flip_roles drains a prefill replica and counts it in the decode target at once."""
        act = make()
        act.flip_roles(RoleFlip(from_pool="p", to_pool="d", count=1))
        assert act.target_size("p") == 1
        assert act.target_size("d") == 3

    def test_drain_named_replica(self) -> None:
        """drain() takes the named ready replica out of service."""
        act = make()
        rid = act.replicas("d")[0].id
        act.drain("d", [rid])
        assert rid not in {r.id for r in act.replicas("d")}
        assert act.target_size("d") == 1

    def test_unknown_pool_is_a_permanent_error(self) -> None:
        """An unknown pool name raises ActuationError naming it."""
        with pytest.raises(ActuationError, match="unknown pool 'x'"):
            make().set_target("x", 1)

    def test_negative_target_is_refused(self) -> None:
        """A negative target is an ActuationError and changes nothing."""
        act = make()
        with pytest.raises(ActuationError, match="n >= 0"):
            act.set_target("p", -1)
        assert act.target_size("p") == 2
