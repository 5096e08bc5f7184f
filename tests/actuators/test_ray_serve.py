"""Ray Serve actuator against a canned dashboard (fast, exact REST shapes); the contract suite runs real Ray."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pdscale.actuators.ray_serve import RayServeActuator, replica_state
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, PoolRole, ReplicaState
from pdscale.controller.runtime.settings import PoolSettings

APPS: dict[str, Any] = {
    "proxy_location": "EveryNode",
    "http_options": {"host": "127.0.0.1", "port": 8000},
    "applications": {
        "llm": {
            "name": "llm",
            "status": "RUNNING",
            "message": "",
            "last_deployed_time_s": 1.0,
            "deployed_app_config": {
                "name": "llm",
                "import_path": "serve_llm:app",
                "deployments": [
                    {"name": "Prefill:llama", "num_replicas": 2},
                    {"name": "Decode:llama", "autoscaling_config": {"min_replicas": 1, "max_replicas": 4}},
                ],
            },
            "deployments": {
                "Prefill:llama": {
                    "replicas": [
                        {"replica_id": "a", "state": "RUNNING", "start_time_s": 5.0},
                        {"replica_id": "b", "state": "STARTING", "start_time_s": 6.0},
                        {"replica_id": "c", "state": "STOPPING", "start_time_s": 1.0},
                    ]
                },
                "Decode:llama": {"replicas": []},
                "Router": {"target_num_replicas": 1, "replicas": []},
            },
        },
        "other": {
            "name": "other",
            "status": "RUNNING",
            "deployed_app_config": {"name": "other", "import_path": "x:app"},
            "deployments": {},
        },
    },
}


class Dashboard(BaseHTTPRequestHandler):
    state: dict[str, Any]
    puts: list[dict[str, Any]]
    auth: list[str | None]
    fail: list[int]
    apply: bool = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.auth.append(self.headers.get("Authorization"))
        if self.fail:
            self._send(self.fail.pop(0), {"error": "unavailable"})
            return
        self._send(200, self.state)

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.puts.append(body)
        if self.apply:  # what Serve does: the PUT config becomes the applied one
            for app in body["applications"]:
                self.state["applications"][app["name"]]["deployed_app_config"] = app
        self._send(200, {})


@pytest.fixture
def dashboard() -> Iterator[tuple[str, type[Dashboard]]]:
    handler = type("D", (Dashboard,), {"state": copy.deepcopy(APPS), "puts": [], "auth": [], "fail": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


POOLS = {
    "prefill": {"application": "llm", "deployment": "Prefill:llama"},
    "decode": {"application": "llm", "deployment": "Decode:llama"},
    "router": {"application": "llm", "deployment": "Router"},
    "ghost": {"application": "nope", "deployment": "X"},
}


def make(url: str, **params: Any) -> RayServeActuator:
    return RayServeActuator(POOLS, {"address": url, "retry_base_s": 0.0, "token_file": None, **params})


class TestRayServe:
    def test_put_changes_only_num_replicas(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """The PUT carries every application's applied config with one num_replicas changed."""
        url, d = dashboard
        make(url).set_target("prefill", 4)
        (body,) = d.puts
        assert [a["name"] for a in body["applications"]] == ["llm", "other"]
        assert body["applications"][0]["deployments"][0] == {
            "name": "Prefill:llama",
            "num_replicas": 4,
            "graceful_shutdown_timeout_s": 600.0,
        }
        assert body["applications"][1] == APPS["applications"]["other"]["deployed_app_config"]
        assert body["http_options"] == APPS["http_options"]

    def test_graceful_shutdown_is_the_pools_drain_timeout(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """A write sets graceful_shutdown_timeout_s from the pool's drain_timeout_s."""
        url, d = dashboard
        pool = PoolSettings(
            name="prefill", role=PoolRole.PREFILL, gpus_per_replica=1, max_replicas=8, drain_timeout_s=45.0,
            actuator=POOLS["prefill"],
        )  # fmt: skip
        act = RayServeActuator({"prefill": pool}, {"address": url, "retry_base_s": 0.0, "token_file": None})
        act.set_target("prefill", 3)
        assert d.puts[0]["applications"][0]["deployments"][0]["graceful_shutdown_timeout_s"] == 45.0

    def test_graceful_shutdown_not_applied_is_an_error(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """When the applied config does not carry the drain bound, the write is reported as failed."""
        url, d = dashboard
        d.apply = False
        with pytest.raises(ActuationError, match="graceful_shutdown_timeout_s") as err:
            make(url).set_target("prefill", 3)
        assert err.value.error_class is ErrorClass.TRANSIENT

    def test_unchanged_target_puts_nothing(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """Setting the current num_replicas sends no PUT."""
        url, d = dashboard
        make(url).set_target("prefill", 2)
        assert d.puts == []

    def test_deployment_absent_from_config_is_added(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """A deployment with code defaults gets its own entry; its target comes from the controller."""
        url, d = dashboard
        act = make(url)
        assert act.target_size("router") == 1
        act.set_target("router", 2)
        assert {"name": "Router", "num_replicas": 2, "graceful_shutdown_timeout_s": 600.0} in d.puts[0]["applications"][
            0
        ]["deployments"]

    def test_own_autoscaling_is_refused(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """A deployment with an autoscaling_config has another owner: permanent error, no PUT."""
        url, d = dashboard
        with pytest.raises(ActuationError, match="autoscaling_config") as err:
            make(url).set_target("decode", 3)
        assert err.value.error_class is ErrorClass.PERMANENT
        assert d.puts == []

    def test_deploy_failed_reports_rays_message(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """DEPLOY_FAILED is permanent and carries Ray's message."""
        url, d = dashboard
        d.state["applications"]["llm"].update(status="DEPLOY_FAILED", message="ImportError: no module serve_llm")
        with pytest.raises(ActuationError, match="no module serve_llm") as err:
            make(url).set_target("prefill", 3)
        assert err.value.error_class is ErrorClass.PERMANENT

    def test_replica_states(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """RUNNING is ready, STARTING starting, STOPPING draining."""
        url, _ = dashboard
        got = {r.id: r.state for r in make(url).replicas("prefill")}
        assert got == {"a": ReplicaState.READY, "b": ReplicaState.STARTING, "c": ReplicaState.DRAINING}

    def test_unknown_application_is_permanent(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """A pool naming a missing application fails permanently, listing those running."""
        url, _ = dashboard
        with pytest.raises(ActuationError, match="running: llm, other") as err:
            make(url).target_size("ghost")
        assert err.value.error_class is ErrorClass.PERMANENT

    def test_transient_errors_are_retried(self, dashboard: tuple[str, type[Dashboard]]) -> None:
        """Two 503s then success: the read succeeds within one call."""
        url, d = dashboard
        d.fail.extend([503, 503])
        assert make(url).target_size("prefill") == 2

    def test_bearer_token_is_sent(
        self, dashboard: tuple[str, type[Dashboard]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A token from the environment goes out as a bearer token."""
        url, d = dashboard
        monkeypatch.setenv("RAY_TOKEN", "t0k")
        make(url, token={"env": "RAY_TOKEN"}).target_size("prefill")
        assert d.auth == ["Bearer t0k"]

    def test_unknown_ray_state_counts_as_starting(self) -> None:
        """A state Ray adds later is treated as starting (paid, not yet serving)."""
        assert replica_state("WARMING_UP") is ReplicaState.STARTING
