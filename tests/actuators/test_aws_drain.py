"""AWS Auto Scaling scale-in: protected instances, chosen, drained and terminated by pdscale (moto's server)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pdscale.actuators.nodegroups import Node, NodeState, choose_nodes
from pdscale.controller.core.types import PoolRole
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.controller.runtime.settings import PoolSettings
from tests.helpers.fake_engine import FakeEngine, Load, fake_engines
from tests.helpers.moto_asg import moto_asg

GROUP = "decode-nodes"


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    with moto_asg(monkeypatch, GROUP, min_size=0, desired=3) as got:
        yield got


def instances(asg: Any) -> dict[str, dict[str, Any]]:
    got = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]
    return {i["InstanceId"]: i for i in got["Instances"]}


def desired(asg: Any) -> int:
    return int(
        asg.describe_auto_scaling_groups(AutoScalingGroupNames=[GROUP])["AutoScalingGroups"][0]["DesiredCapacity"]
    )


def make(url: str, engines: dict[str, FakeEngine], timeout_s: float = 5.0) -> Any:
    from pdscale.actuators.aws import AwsAsgActuator

    pools = {
        "decode": PoolSettings(
            name="decode",
            role=PoolRole.DECODE,
            gpus_per_replica=8,
            min_replicas=0,
            max_replicas=6,
            drain_timeout_s=timeout_s,
            actuator={"asg": GROUP, "min_interval_s": 0, "drain": {"poll_s": 0.05}},
        )
    }
    env = PluginEnv(resources={"engine_url": lambda pool, instance: engines[instance].url})
    return AwsAsgActuator(pools, {"endpoint_url": url, "retry_base_s": 0.0}, env)


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``cond`` until it holds (requests reach their engines)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def terminate_gone(asg: Any, engines: dict[str, FakeEngine]) -> dict[str, int]:
    """Kill the engines of instances no longer in the group; requests each still held."""
    live = instances(asg)
    return {i: e.kill() for i, e in engines.items() if i not in live}


@pytest.mark.integration_aws
class TestAwsDrain:
    def test_scale_in_loses_no_request_and_removes_the_least_loaded(self, moto: tuple[str, Any]) -> None:
        """The two least-loaded instances are drained, then terminated; every request in flight finishes."""
        url, asg = moto
        ids = sorted(instances(asg))
        with fake_engines(ids, hold_s=1.0) as engines:
            act = make(url, engines)
            load = Load()
            for n, i in zip((3, 1, 2), ids, strict=True):
                load.send(engines[i].url, n)
            wait_until(lambda: sum(e.inflight for e in engines.values()) >= 6)
            act.set_target("decode", 1)
            cut = terminate_gone(asg, engines)
            load.wait()
            assert sorted(cut) == ids[1:]
            assert sum(cut.values()) == 0
            assert (load.ok, load.lost) == (6, 0)
            assert desired(asg) == 1
            result = act.take_drain_result("decode")
            assert result is not None
            assert sorted(result.drained) == ids[1:]

    def test_instances_are_protected_from_scale_in(self, moto: tuple[str, Any]) -> None:
        """After pdscale's first call every instance is protected, so AWS never picks a victim itself."""
        url, asg = moto
        with fake_engines(sorted(instances(asg))) as engines:
            make(url, engines).set_target("decode", 3)
        assert all(i["ProtectedFromScaleIn"] for i in instances(asg).values())

    def test_timeout_says_so(self, moto: tuple[str, Any]) -> None:
        """An instance still busy at drain_timeout_s is terminated and reported with the requests cut."""
        url, asg = moto
        ids = sorted(instances(asg))
        with fake_engines(ids, hold_s=10.0) as engines:
            act = make(url, engines, timeout_s=0.3)
            load = Load()
            for n, i in zip((2, 3, 3), ids, strict=True):
                load.send(engines[i].url, n)
            wait_until(lambda: sum(e.inflight for e in engines.values()) >= 8)
            act.set_target("decode", 2)
            cut = terminate_gone(asg, engines)
            result = act.take_drain_result("decode")
            assert result is not None
            assert (result.outcome, result.timed_out, result.cut_inflight) == ("drain_timeout", (ids[0],), 2)
            assert cut == {ids[0]: 2}


class TestChooseNodes:
    def test_pending_nodes_go_before_running_ones(self) -> None:
        """Pending nodes are chosen first; running ones by load; terminating ones never."""
        nodes = [
            Node("a", NodeState.RUNNING),
            Node("b", NodeState.PENDING),
            Node("c", NodeState.RUNNING),
            Node("d", NodeState.TERMINATING),
        ]
        loads = {"a": 5.0, "c": 1.0}
        assert [n.id for n in choose_nodes(nodes, 2, lambda n: loads[n.id])] == ["b", "c"]
        assert [n.id for n in choose_nodes(nodes, 5, lambda n: loads[n.id])] == ["b", "c", "a"]
