"""Kubernetes actuator against the project's emulated API server (real client library over HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdscale.actuators.kubernetes import (
    CUSTOM_RESOURCE_VERBS,
    DELETION_COST_ANNOTATION,
    RBAC_RULES,
    KubernetesActuator,
)
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, ReplicaState
from pdscale.controller.runtime.plugins import PluginEnv
from tests.helpers.k8s_emulator import K8sEmulator, running_emulator, write_kubeconfig

pytestmark = pytest.mark.integration_k8s

RBAC_FILE = Path(__file__).resolve().parents[2] / "deploy" / "rbac-requirements.yaml"


class Clock:
    """A settable clock for the emulator's pod lifecycles."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cluster(tmp_path: Path, clock: Clock) -> Iterator[tuple[K8sEmulator, Path]]:
    emu = K8sEmulator(start_delay_s=30.0, terminate_delay_s=20.0, clock=clock, token="s3cret")
    emu.add_kind(
        "nvidia.com", "v1alpha1", "dynamographdeploymentscalingadapters", "DynamoGraphDeploymentScalingAdapter"
    )
    with running_emulator(emu) as (emu, url):
        emu.create("deployments", "prefill", 2)
        emu.create("statefulsets", "decode", 1)
        emu.create("leaderworkersets", "lws", 1)
        emu.create("dynamographdeploymentscalingadapters", "dgd-decode", 1)
        yield emu, write_kubeconfig(tmp_path / "kubeconfig", url, token="s3cret")


POOLS: dict[str, dict[str, Any]] = {
    "prefill": {"name": "prefill"},
    "decode": {"name": "decode", "kind": "StatefulSet"},
    "lws": {"name": "lws", "kind": "LeaderWorkerSet"},
    "dynamo": {
        "name": "dgd-decode",
        "kind": "DynamoGraphDeploymentScalingAdapter",
        "group": "nvidia.com",
        "version": "v1alpha1",
        "plural": "dynamographdeploymentscalingadapters",
    },
}


def make(kubeconfig: Path, env: PluginEnv | None = None, **params: Any) -> KubernetesActuator:
    return KubernetesActuator(POOLS, {"kubeconfig": str(kubeconfig), "retry_base_s": 0.0, **params}, env or PluginEnv())


class TestScale:
    def test_every_kind_reads_and_writes_through_scale(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """Deployments, StatefulSets, LWS and a custom /scale resource all take a new target."""
        emu, kc = cluster
        act = make(kc)
        for i, pool in enumerate(POOLS, start=3):
            act.set_target(pool, i)
            assert act.target_size(pool) == i
        assert (
            "PUT",
            "/apis/nvidia.com/v1alpha1/namespaces/default/dynamographdeploymentscalingadapters/dgd-decode/scale",
        ) in emu.requests

    def test_same_target_twice_writes_once(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """A repeated target leaves the resourceVersion alone."""
        emu, kc = cluster
        act = make(kc)
        act.set_target("prefill", 4)
        rv = emu.resource_version("deployments", "prefill")
        act.set_target("prefill", 4)
        assert emu.resource_version("deployments", "prefill") == rv
        assert sum(1 for m, p in emu.requests if m == "PUT") == 1

    def test_conflict_is_reread_and_retried(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """A 409 on the PUT makes the actuator read again and succeed."""
        emu, kc = cluster
        emu.fail_next("PUT", "/deployments/prefill/scale", 409)
        make(kc).set_target("prefill", 5)
        assert emu.objects[("deployments", "default", "prefill")]["spec"]["replicas"] == 5
        assert sum(1 for m, p in emu.requests if m == "PUT") == 2

    def test_server_errors_are_retried_within_the_call(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """Two 503s then success: the call succeeds."""
        emu, kc = cluster
        emu.fail_next("GET", "/deployments/prefill/scale", 503, times=2)
        assert make(kc).target_size("prefill") == 2

    def test_persistent_server_errors_are_transient(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """Retries exhausted on 503 raise a transient ActuationError."""
        emu, kc = cluster
        emu.fail_next("GET", "/deployments/prefill/scale", 503, times=10)
        with pytest.raises(ActuationError) as err:
            make(kc).target_size("prefill")
        assert err.value.error_class is ErrorClass.TRANSIENT

    def test_missing_object_is_permanent(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """A pool pointing at a Deployment that does not exist fails permanently."""
        _, kc = cluster
        act = KubernetesActuator({"ghost": {"name": "nope"}}, {"kubeconfig": str(kc)}, PluginEnv())
        with pytest.raises(ActuationError) as err:
            act.target_size("ghost")
        assert err.value.error_class is ErrorClass.PERMANENT

    def test_patch_mode_uses_merge_patch(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """write: patch sends a merge patch of spec.replicas."""
        emu, kc = cluster
        make(kc, write="patch").set_target("decode", 3)
        assert ("PATCH", "/apis/apps/v1/namespaces/default/statefulsets/decode/scale") in emu.requests
        assert emu.objects[("statefulsets", "default", "decode")]["spec"]["replicas"] == 3


class TestReplicas:
    def test_lifecycle_states_come_from_pods(self, cluster: tuple[K8sEmulator, Path], clock: Clock) -> None:
        """New pods are starting, become ready, and terminating pods are draining until gone."""
        _, kc = cluster
        act = make(kc)
        act.set_target("prefill", 4)
        states = sorted(r.state for r in act.replicas("prefill"))
        assert (states.count(ReplicaState.STARTING), states.count(ReplicaState.READY)) == (2, 2)
        clock.now = 31.0
        assert all(r.state is ReplicaState.READY for r in act.replicas("prefill"))
        act.set_target("prefill", 1)
        assert [r.state for r in act.replicas("prefill")].count(ReplicaState.DRAINING) == 3
        clock.now = 60.0
        assert [r.state for r in act.replicas("prefill")] == [ReplicaState.READY]

    def test_deletion_cost_sends_least_loaded_first(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """With a load per pod, the least-loaded pod is the one removed on scale-down."""
        emu, kc = cluster
        pods = [p["metadata"]["name"] for p in emu.pods_of("prefill")]
        loads = {pods[0]: 9.0, pods[1]: 1.0}
        env = PluginEnv(resources={"pod_load": lambda pool, pod: loads[pod]})
        act = make(kc, env, deletion_cost=True)
        assert {r.id: r.load for r in act.replicas("prefill")} == loads
        act.set_target("prefill", 1)
        live = [p for p in emu.pods_of("prefill") if not p["metadata"].get("deletionTimestamp")]
        assert [p["metadata"]["name"] for p in live] == [pods[0]]
        assert live[0]["metadata"]["annotations"][DELETION_COST_ANNOTATION] == "1"


class TestExternalChange:
    def test_external_edit_is_reported_with_its_manager(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """kubectl scale after our write is detected and attributed to kubectl."""
        emu, kc = cluster
        act = make(kc)
        act.set_target("prefill", 3)
        assert act.external_change("prefill") is None
        emu.set_replicas("deployments", "prefill", 6, manager="kubectl-scale")
        report = act.external_change("prefill")
        assert report is not None
        assert (report.ours, report.theirs, report.by) == (3, 6, "kubectl-scale")
        assert act.target_size("prefill") == 6

    def test_watch_reports_external_edit(self, cluster: tuple[K8sEmulator, Path]) -> None:
        """The watch stream surfaces a replica change made by someone else."""
        emu, kc = cluster
        act = make(kc)
        act.set_target("prefill", 3)
        emu.set_replicas("deployments", "prefill", 7, manager="helm")
        reports = act.watch_external_changes("prefill", timeout_s=1)
        assert [(r.theirs, r.by) for r in reports] == [(7, "helm")]


class TestConfig:
    def test_bad_address_names_the_field(self, tmp_path: Path) -> None:
        """A custom kind without group/version/plural is refused, naming the pool."""
        with pytest.raises(ActuationError, match=r"pools\[p\]\.actuator"):
            KubernetesActuator({"p": {"name": "x", "kind": "Foo"}}, {"kubeconfig": "unused"}, PluginEnv())

    def test_unknown_param_is_refused(self) -> None:
        """A misspelt parameter is named."""
        with pytest.raises(ActuationError, match=r"actuator\.params\.namspace: unknown field"):
            KubernetesActuator({}, {"namspace": "x"}, PluginEnv())

    def test_wrong_token_is_permanent(self, cluster: tuple[K8sEmulator, Path], tmp_path: Path) -> None:
        """401 from the API server is permanent (fix the credentials)."""
        _, kc = cluster
        bad = tmp_path / "bad"
        bad.write_text(kc.read_text().replace("s3cret", "wrong"))
        with pytest.raises(ActuationError) as err:
            make(bad).target_size("prefill")
        assert err.value.error_class is ErrorClass.PERMANENT


class TestRbac:
    def test_rules_match_deploy_requirements(self) -> None:
        """RBAC_RULES lists exactly the rules deploy/rbac-requirements.yaml grants the actuator."""
        if not RBAC_FILE.exists():
            pytest.skip("deploy/rbac-requirements.yaml is not in this checkout")
        data = yaml.safe_load(RBAC_FILE.read_text())
        wanted = {
            (r["apiGroup"], r["resource"], tuple(r["verbs"]))
            for r in data["rules"]
            if r["apiGroup"] != "coordination.k8s.io"  # leader election belongs to the daemon, not the actuator
        }
        assert set(RBAC_RULES) == wanted
        assert {k: tuple(v) for k, v in data["custom_resource_verbs"].items()} == dict(CUSTOM_RESOURCE_VERBS)
