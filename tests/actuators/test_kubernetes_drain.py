"""Kubernetes scale-down drains chosen pods through a fake engine per pod, on the emulated API server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pdscale.actuators.kubernetes import DELETION_COST_ANNOTATION, KubernetesActuator
from pdscale.actuators.kubernetes_drain import MIN_DELETION_COST
from pdscale.controller.runtime.plugins import PluginEnv
from tests.helpers.fake_engine import FakeEngine, Load, fake_engines
from tests.helpers.k8s_emulator import K8sEmulator, running_emulator, write_kubeconfig

pytestmark = pytest.mark.integration_k8s

DRAIN = {"poll_s": 0.05, "timeout_s": 5.0}


class Clock:
    """A settable clock for the emulator's pod lifecycles."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """The emulator, a kubeconfig, and one fake engine per pod (killed when its pod starts terminating)."""

    def __init__(self, emu: K8sEmulator, kubeconfig: Path, engines: dict[str, FakeEngine]) -> None:
        self.emu, self.kubeconfig, self.engines = emu, kubeconfig, engines
        self.cut: dict[str, int] = {}
        emu.on_delete = self._deleted

    def _deleted(self, pod: str) -> None:
        if pod in self.engines:
            self.cut[pod] = self.engines[pod].kill()

    def actuator(self, pools: dict[str, Any], **params: Any) -> KubernetesActuator:
        env = PluginEnv(resources={"engine_url": lambda pool, pod: self.engines[pod].url})
        return KubernetesActuator(pools, {"kubeconfig": str(self.kubeconfig), "retry_base_s": 0.0, **params}, env)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cluster(tmp_path: Path, clock: Clock, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    hold_s = getattr(request, "param", 1.0)
    emu = K8sEmulator(start_delay_s=30.0, clock=clock)
    with running_emulator(emu) as (emu, url):
        emu.create("deployments", "prefill", 3)
        emu.create("leaderworkersets", "decode", 3)
        names = [p["metadata"]["name"] for p in emu.pods_of("prefill") + emu.pods_of("decode")]
        with fake_engines(names, hold_s=hold_s) as engines:
            yield Cluster(emu, write_kubeconfig(tmp_path / "kubeconfig", url), engines)


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``cond`` until it holds (requests reach their engines)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def prefill_pool(**extra: Any) -> dict[str, Any]:
    return {"prefill": {"name": "prefill", "drain": DRAIN, **extra}}


def pods(emu: K8sEmulator, name: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in emu.pods_of(name) if not p["metadata"].get("deletionTimestamp"))


class TestDrain:
    def test_scale_down_loses_no_request(self, cluster: Cluster) -> None:
        """Requests in flight on the removed pods all finish: none is lost or aborted."""
        act = cluster.actuator(prefill_pool())
        load = Load()
        for name in pods(cluster.emu, "prefill"):
            load.send(cluster.engines[name].url, 2)
        wait_until(lambda: sum(e.inflight for e in cluster.engines.values()) >= 6)
        act.set_target("prefill", 1)
        load.wait()
        assert (load.ok, load.lost, load.refused) == (6, 0, 0)
        assert sum(cluster.cut.values()) == 0
        assert len(pods(cluster.emu, "prefill")) == 1

    def test_removes_exactly_the_least_loaded_pods(self, cluster: Cluster) -> None:
        """The pods drained are the ones the ReplicaSet removes, chosen by in-flight count, not by name."""
        act = cluster.actuator(prefill_pool())
        first, second, third = pods(cluster.emu, "prefill")
        load = Load()
        load.send(cluster.engines[first].url, 3)
        load.send(cluster.engines[third].url, 1)
        wait_until(lambda: cluster.engines[first].inflight >= 3 and cluster.engines[third].inflight >= 1)
        act.set_target("prefill", 1)
        load.wait()
        assert pods(cluster.emu, "prefill") == [first]
        result = act.take_drain_result("prefill")
        assert result is not None
        assert set(result.drained) == {second, third}
        costs = {p["metadata"]["name"]: p["metadata"]["annotations"].get(DELETION_COST_ANNOTATION)
                 for p in cluster.emu.pods_of("prefill")}  # fmt: skip
        assert costs[first] is None

    @pytest.mark.parametrize("cluster", [10.0], indirect=True)
    def test_timeout_says_so(self, cluster: Cluster) -> None:
        """A drain past its timeout removes the pod and reports drain_timeout with the requests it cut."""
        act = cluster.actuator(prefill_pool(drain={**DRAIN, "timeout_s": 0.3}))
        name = pods(cluster.emu, "prefill")[0]
        load = Load()
        for n in pods(cluster.emu, "prefill"):
            load.send(cluster.engines[n].url, 2 if n == name else 4)
        wait_until(lambda: sum(e.inflight for e in cluster.engines.values()) >= 10)
        act.set_target("prefill", 2)
        result = act.take_drain_result("prefill")
        assert result is not None
        assert (result.outcome, result.timed_out, result.cut_inflight) == ("drain_timeout", (name,), 2)
        assert cluster.cut == {name: 2}
        warnings = [e for e in cluster.emu.k8s_events if e["reason"] == "DrainTimeout"]
        assert len(warnings) == 1
        assert warnings[0]["type"] == "Warning"
        assert "2 in-flight requests cut" in warnings[0]["message"]

    def test_unroute_label_is_removed_before_the_drain(self, cluster: Cluster) -> None:
        """The routing label goes from the chosen pod only; the ReplicaSet's own label stays."""
        for p in cluster.emu.pods_of("prefill"):
            p_name = p["metadata"]["name"]
            cluster.emu.pods[("default", p_name)]["metadata"]["labels"]["serving"] = "true"
        act = cluster.actuator(prefill_pool(unroute_label="serving", drain={**DRAIN, "timeout_s": 0.0}))
        before = pods(cluster.emu, "prefill")
        cluster.emu.on_delete = None  # keep the terminating pod visible (terminate_delay 0 deletes at once)
        cluster.emu.terminate_delay_s = 60.0
        act.set_target("prefill", 2)
        labels = {p["metadata"]["name"]: p["metadata"]["labels"] for p in cluster.emu.pods_of("prefill")}
        gone = [n for n in before if n not in pods(cluster.emu, "prefill")]
        assert len(gone) == 1
        assert labels[gone[0]] == {"app": "prefill"}
        assert all(labels[n].get("serving") == "true" for n in before if n != gone[0])
        assert cluster.emu.pods[("default", gone[0])]["metadata"]["annotations"][DELETION_COST_ANNOTATION] == str(
            MIN_DELETION_COST
        )

    def test_starting_pods_are_cancelled_before_ready_ones_drain(self, cluster: Cluster) -> None:
        """Scale-down lets go of a starting pod first; no ready pod is drained or removed."""
        act = cluster.actuator(prefill_pool())
        ready = pods(cluster.emu, "prefill")
        act.set_target("prefill", 4)
        act.take_drain_result("prefill")
        act.set_target("prefill", 3)
        result = act.take_drain_result("prefill")
        assert result is not None
        assert (result.cancelled, result.drained, result.timed_out) == (1, (), ())
        assert pods(cluster.emu, "prefill") == ready

    def test_leaderworkerset_drains_its_highest_group(self, cluster: Cluster) -> None:
        """A LeaderWorkerSet loses its highest index, so that is the group drained, with nothing lost."""
        act = cluster.actuator({"decode": {"name": "decode", "kind": "LeaderWorkerSet", "drain": DRAIN}})
        groups = pods(cluster.emu, "decode")
        load = Load()
        for name in groups:
            load.send(cluster.engines[name].url, 1)
        wait_until(lambda: sum(cluster.engines[n].inflight for n in groups) >= 3)
        act.set_target("decode", 2)
        load.wait()
        result = act.take_drain_result("decode")
        assert result is not None
        assert result.drained == (groups[-1],)
        assert pods(cluster.emu, "decode") == groups[:-1]
        assert (load.ok, load.lost) == (3, 0)


class TestEvents:
    def test_each_scale_records_an_event_on_the_scaled_object(self, cluster: Cluster) -> None:
        """An applied scale is a SuccessfulRescale Event naming the object, from and to."""
        act = cluster.actuator(prefill_pool())
        act.set_target("prefill", 5)
        (event,) = cluster.emu.k8s_events
        assert event["reason"] == "SuccessfulRescale"
        assert event["involvedObject"]["kind"] == "Deployment"
        assert event["involvedObject"]["name"] == "prefill"
        assert event["involvedObject"]["uid"] == "uid-deployments-prefill"
        assert "from: 3; to: 5" in event["message"]

    def test_drain_records_its_own_event(self, cluster: Cluster) -> None:
        """A scale-down records Drained beside SuccessfulRescale."""
        act = cluster.actuator(prefill_pool())
        act.set_target("prefill", 2)
        assert [e["reason"] for e in cluster.emu.k8s_events] == ["Drained", "SuccessfulRescale"]

    def test_events_can_be_turned_off(self, cluster: Cluster) -> None:
        """events: false records none."""
        act = cluster.actuator(prefill_pool(), events=False)
        act.set_target("prefill", 4)
        assert cluster.emu.k8s_events == []
