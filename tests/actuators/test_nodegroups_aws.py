"""Node-group sizing (pure) and the AWS Auto Scaling actuator against moto's server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pdscale.actuators.nodegroups import NodeSizing, plan_nodes
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, PoolRole, ReplicaState
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.controller.runtime.settings import PoolSettings
from tests.helpers.moto_asg import moto_asg

P5 = NodeSizing(gpus_per_node=8, gpus_per_replica=4, headroom_nodes=1, max_step_nodes=2, min_interval_s=60.0)


def plan(**kw: Any) -> Any:
    args: dict[str, Any] = {
        "replicas": 4,
        "occupied_replicas": 0,
        "current_nodes": 3,
        "min_nodes": 0,
        "max_nodes": 10,
        "last_change_s": None,
        "now": 100.0,
    }
    args.update(kw)
    return plan_nodes(P5, **args)


class TestPlanNodes:
    def test_gpus_become_nodes_with_headroom(self) -> None:
        """4 replicas of 4 GPUs fill 2 p5 nodes, plus 1 node of headroom."""
        assert plan().goal == 3

    def test_multi_node_replicas(self) -> None:
        """A 16-GPU replica takes two 8-GPU nodes."""
        assert NodeSizing(gpus_per_node=8, gpus_per_replica=16).nodes_for(3) == 6

    def test_step_is_limited(self) -> None:
        """A jump of 7 nodes moves at most max_step_nodes."""
        got = plan(replicas=20, current_nodes=3)
        assert (got.nodes, got.goal) == (5, 10)

    def test_one_change_per_interval(self) -> None:
        """A change 30 s after the last one waits (timestamps, not ticks)."""
        assert plan(replicas=10, last_change_s=70.0, now=100.0).nodes == 3
        assert plan(replicas=10, last_change_s=30.0, now=100.0).nodes == 5

    def test_never_below_running_replicas(self) -> None:
        """Scale-in keeps the nodes that running replicas occupy."""
        assert plan(replicas=0, occupied_replicas=6, current_nodes=3).goal == 3

    def test_min_is_enforced(self) -> None:
        """The group's min size is a floor pdscale applies itself."""
        assert plan(replicas=0, min_nodes=2, current_nodes=2).goal == 2


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    with moto_asg(monkeypatch, "decode-nodes", min_size=1, desired=1) as got:
        yield got


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(url: str, clock: Clock, occupied: int = 0, **address: Any) -> Any:
    from pdscale.actuators.aws import AwsAsgActuator

    pools = {
        "decode": PoolSettings(
            name="decode",
            role=PoolRole.DECODE,
            gpus_per_replica=4,
            max_replicas=20,
            actuator={"asg": "decode-nodes", "max_step_nodes": 2, "min_interval_s": 60, **address},
        )
    }
    env = PluginEnv(resources={"clock": clock, "occupied_replicas": lambda pool: occupied})
    return AwsAsgActuator(pools, {"endpoint_url": url}, env)


def desired(asg: Any) -> int:
    return int(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=["decode-nodes"])["AutoScalingGroups"][0][
            "DesiredCapacity"
        ]
    )


@pytest.mark.integration_aws
class TestAwsAsg:
    def test_goal_is_walked_at_a_paced_rate(self, moto: tuple[str, Any]) -> None:
        """8 replicas of 4 GPUs = 4 p5 nodes, reached 2 nodes per minute; target_size reports the goal."""
        url, asg = moto
        clock = Clock()
        act = make(url, clock)
        act.set_target("decode", 8)
        assert desired(asg) == 3
        assert act.target_size("decode") == 8
        clock.now += 30
        act.target_size("decode")
        assert desired(asg) == 3
        clock.now += 31
        act.target_size("decode")
        assert desired(asg) == 4

    def test_replicas_per_node(self, moto: tuple[str, Any]) -> None:
        """Each in-service p5 node holds two 4-GPU replicas, all ready."""
        url, _ = moto
        act = make(url, Clock())
        assert [r.state for r in act.replicas("decode")] == [ReplicaState.READY] * 2

    def test_more_than_max_is_out_of_resources(self, moto: tuple[str, Any]) -> None:
        """A target needing more nodes than MaxSize fails as out-of-resources and writes nothing."""
        url, asg = moto
        with pytest.raises(ActuationError) as err:
            make(url, Clock()).set_target("decode", 13)
        assert err.value.error_class is ErrorClass.OUT_OF_RESOURCES
        assert desired(asg) == 1

    def test_scale_in_keeps_occupied_nodes(self, moto: tuple[str, Any]) -> None:
        """Scale-in stops at the nodes running replicas occupy."""
        url, asg = moto
        asg.set_desired_capacity(AutoScalingGroupName="decode-nodes", DesiredCapacity=4)
        make(url, Clock(), occupied=5).set_target("decode", 1)
        assert desired(asg) == 3

    def test_external_change_stops_the_walk(self, moto: tuple[str, Any]) -> None:
        """After someone else sets the group, target_size reports their count and the walk stops."""
        url, asg = moto
        clock = Clock()
        act = make(url, clock)
        act.set_target("decode", 10)
        asg.set_desired_capacity(AutoScalingGroupName="decode-nodes", DesiredCapacity=2)
        clock.now += 120
        assert act.target_size("decode") == 4
        assert desired(asg) == 2

    def test_missing_group_is_permanent(self, moto: tuple[str, Any]) -> None:
        """A pool naming a group that does not exist fails permanently."""
        url, _ = moto
        with pytest.raises(ActuationError) as err:
            make(url, Clock(), asg="nope").target_size("decode")
        assert err.value.error_class is ErrorClass.PERMANENT
