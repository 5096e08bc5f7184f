"""Live backends for the actuator contract suite: one fixture param per actuator.

Each backend provides an actuator over two pools, a way to let replicas settle, a revision function that
changes exactly when the backend's desired state changes, and (where the actuator has one) a dry-run twin
over the same backend.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from pdscale.controller.core.types import PoolRole
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.testing import FakeActuator

POOLS = ("prefill", "decode")


@dataclass
class Backend:
    """One actuator under contract test."""

    name: str
    actuator: Any
    settle: Callable[[str, int], None]
    revision: Callable[[str], object]
    dry_run: Callable[[], Any] | None
    capabilities: frozenset[str]
    pools: tuple[str, str] = POOLS
    notes: dict[str, Any] = field(default_factory=dict)


def pool_settings(**actuator: dict[str, Any]) -> dict[str, PoolSettings]:
    """Prefill and decode pool settings with per-pool actuator addresses."""
    return {
        name: PoolSettings(
            name=name,
            role=PoolRole(name),
            gpus_per_replica=8,
            min_replicas=0,
            max_replicas=8,
            actuator=actuator.get(name, {}),
        )
        for name in POOLS
    }


def _fake_revision(act: Any) -> Callable[[str], object]:
    return lambda pool: (act.target_size(pool), tuple((r.id, r.state) for r in act.replicas(pool)))


def fake_backend() -> Backend:
    act = FakeActuator(dict.fromkeys(POOLS, 2))
    return Backend("fake", act, lambda pool, n: None, _fake_revision(act), act.dry_run_view, frozenset({"flip_roles"}))


def simulator_backend() -> Backend:
    sim = pytest.importorskip(
        "pdscale.actuators.simulator", reason="pdscale.actuators.simulator is not in this checkout yet"
    )
    from pdscale.simulator import Cluster, ClusterConfig
    from tests.simulator.cluster_fixtures import StandInPerf, fixed_trace

    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=2, decode_replicas=2, cold_start_s=60.0),  # type: ignore[arg-type]
        fixed_trace([], prompt=1, output=1),  # type: ignore[arg-type]
    )
    act = sim.SimulatorActuator(pool_settings(), cluster=cluster)
    clock = {"t": 0.0}

    def settle(pool: str, n: int) -> None:
        clock["t"] += 3600.0
        cluster.advance_to(clock["t"])

    return Backend(
        "simulator",
        act,
        settle,
        _fake_revision(act),
        lambda: sim.SimulatorActuator(pool_settings(), {"dry_run": True}, cluster=cluster),
        frozenset({"flip_roles", "drain", "cancel_pending"}),
    )


def kubernetes_backend(tmp_path: Path) -> Iterator[Backend]:
    from pdscale.actuators.kubernetes import KubernetesActuator
    from tests.helpers.k8s_emulator import running_emulator, write_kubeconfig

    with running_emulator() as (emu, url):
        emu.create("deployments", "prefill", 2)
        emu.create("statefulsets", "decode", 2)
        kc = write_kubeconfig(tmp_path / "kubeconfig", url)
        pools = pool_settings(prefill={"name": "prefill"}, decode={"name": "decode", "kind": "StatefulSet"})
        plural = {"prefill": "deployments", "decode": "statefulsets"}

        def make(dry_run: bool = False) -> KubernetesActuator:
            return KubernetesActuator(pools, {"kubeconfig": str(kc), "dry_run": dry_run}, PluginEnv())

        yield Backend(
            "kubernetes",
            make(),
            lambda pool, n: None,
            lambda pool: emu.resource_version(plural[pool], pool),
            lambda: make(dry_run=True),
            frozenset(),
        )


class _FakeEngine(BaseHTTPRequestHandler):
    """Accepts POST /workers/<id>/v1/pd_role (or SGLang's /pd_role_switch) and records the role; idle metrics."""

    roles: ClassVar[dict[str, str]] = {}

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        data = b"sglang:num_running_reqs 0\nsglang:num_queue_reqs 0\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        worker = self.path.split("/")[2]
        type(self).roles[worker] = body.get("role") or body["new_role"]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def fake_engine() -> Iterator[tuple[str, dict[str, str]]]:
    """A local engine fake that records role changes per worker."""
    handler = type("Engine", (_FakeEngine,), {"roles": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.roles
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def http_flip_backend(engine_url: str) -> Backend:
    from pdscale.actuators.http_flip import HttpRoleFlipActuator

    base = FakeActuator(dict.fromkeys(POOLS, 2))
    env = PluginEnv(resources={"base_actuator": base})
    params = {"url": engine_url + "/workers/$replica/v1/pd_role"}

    def make(dry_run: bool = False) -> HttpRoleFlipActuator:
        return HttpRoleFlipActuator(pool_settings(), {**params, "dry_run": dry_run}, env)

    return Backend(
        "http_flip", make(), lambda pool, n: None, _fake_revision(base), lambda: make(True), frozenset({"flip_roles"})
    )


def sglang_backend(engine_url: str) -> Backend:
    from pdscale.actuators.sglang import SglangRoleSwitchActuator

    base = FakeActuator(dict.fromkeys(POOLS, 2))
    env = PluginEnv(resources={"base_actuator": base})
    params = {
        "url": engine_url + "/workers/$replica/pd_role_switch",
        "metrics_url": engine_url + "/workers/$replica/metrics",
    }

    def make(dry_run: bool = False) -> SglangRoleSwitchActuator:
        return SglangRoleSwitchActuator(pool_settings(), {**params, "dry_run": dry_run}, env)

    return Backend(
        "sglang", make(), lambda pool, n: None, _fake_revision(base), lambda: make(True), frozenset({"flip_roles"})
    )


@pytest.fixture(scope="session")
def ray_serve_head() -> Iterator[Any]:
    """A local Ray head with the two-deployment test app running (session-wide; ~20 s to start)."""
    from tests.helpers.ray_cluster import deploy, free_port, ray_head, wait_running

    with ray_head() as head:
        deploy(head, free_port())
        wait_running(head, "pd", {"Prefill": 1, "Decode": 1})
        yield head


def ray_backend(head: Any) -> Backend:
    from pdscale.actuators.ray_serve import RayServeActuator
    from tests.helpers.ray_cluster import wait_running

    names = {"prefill": "Prefill", "decode": "Decode"}
    pools = pool_settings(**{p: {"application": "pd", "deployment": d} for p, d in names.items()})

    def make(dry_run: bool = False) -> RayServeActuator:
        return RayServeActuator(pools, {"address": head.dashboard_url, "dry_run": dry_run}, PluginEnv())

    act = make()
    for pool in POOLS:
        act.set_target(pool, 1)
    wait_running(head, "pd", {"Prefill": 1, "Decode": 1})

    def settle(pool: str, n: int) -> None:
        other = next(p for p in POOLS if p != pool)
        wait_running(head, "pd", {names[pool]: n, names[other]: act.target_size(other)})

    def revision(pool: str) -> object:
        got = requests.get(head.dashboard_url + "/api/serve/applications/", timeout=10).json()
        app = got["applications"]["pd"]
        return app["last_deployed_time_s"], json.dumps(app["deployed_app_config"], sort_keys=True)

    return Backend("ray", act, settle, revision, lambda: make(True), frozenset())


def aws_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    from pdscale.actuators.aws import AwsAsgActuator
    from tests.helpers.ray_cluster import free_port

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        requests.post(url + "/moto-api/reset", timeout=10)  # moto's state is process-wide
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
        asg = boto3.client("autoscaling", region_name="us-east-1", endpoint_url=url)
        ec2.create_launch_template(
            LaunchTemplateName="gpu",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "p5.48xlarge"},
        )
        for pool in POOLS:
            asg.create_auto_scaling_group(
                AutoScalingGroupName=f"{pool}-nodes",
                LaunchTemplate={"LaunchTemplateName": "gpu", "Version": "$Latest"},
                MinSize=0,
                MaxSize=8,
                DesiredCapacity=2,
                AvailabilityZones=["us-east-1a"],
            )
        pools = pool_settings(**{p: {"asg": f"{p}-nodes", "min_interval_s": 0, "max_step_nodes": 8} for p in POOLS})

        def make(dry_run: bool = False) -> AwsAsgActuator:
            return AwsAsgActuator(pools, {"endpoint_url": url, "dry_run": dry_run}, PluginEnv())

        act = make()

        def revision(pool: str) -> object:
            got = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[f"{pool}-nodes"])
            return got["AutoScalingGroups"][0]["DesiredCapacity"], act.calls.counts.get("set_desired", 0)

        yield Backend("aws", act, lambda pool, n: None, revision, lambda: make(True), frozenset())
    finally:
        server.stop()


BACKENDS = [
    "fake",
    "simulator",
    pytest.param("kubernetes", marks=pytest.mark.integration_k8s),
    pytest.param("aws", marks=pytest.mark.integration_aws),
    "http_flip",
    "sglang",
    pytest.param("ray", marks=pytest.mark.integration_ray),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    """Every actuator, each over a live backend."""
    name = request.param
    if name == "fake":
        yield fake_backend()
    elif name == "simulator":
        yield simulator_backend()
    elif name == "kubernetes":
        yield from kubernetes_backend(tmp_path)
    elif name == "aws":
        yield from aws_backend(monkeypatch)
    elif name == "http_flip":
        yield http_flip_backend(request.getfixturevalue("fake_engine")[0])
    elif name == "sglang":
        yield sglang_backend(request.getfixturevalue("fake_engine")[0])
    else:
        yield ray_backend(request.getfixturevalue("ray_serve_head"))
