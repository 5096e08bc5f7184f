"""HTTP role-flip actuator beside a base scaler, against a local fake engine."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pdscale.actuators.http_flip import HttpRoleFlipActuator
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, PoolRole, RoleFlip
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.testing import FakeActuator


class Engine(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, Any]]]
    status: int

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append((self.path, body))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def engine() -> Iterator[tuple[str, type[Engine]]]:
    handler = type("E", (Engine,), {"calls": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


POOLS = {
    n: PoolSettings(name=n, role=PoolRole(n), gpus_per_replica=8, max_replicas=8, drain_timeout_s=120)
    for n in ("prefill", "decode")
}


def make(url: str, base: FakeActuator, **params: Any) -> HttpRoleFlipActuator:
    env = PluginEnv(resources={"base_actuator": base})
    return HttpRoleFlipActuator(POOLS, {"url": url + "/$replica/v1/pd_role", "retry_base_s": 0.0, **params}, env)


class TestHttpRoleFlip:
    def test_flip_posts_role_and_drain_timeout(self, engine: tuple[str, type[Engine]]) -> None:
        """The worker gets the new role and the source pool's drain timeout."""
        url, e = engine
        base = FakeActuator({"prefill": 2, "decode": 2})
        make(url, base).flip_roles(RoleFlip("prefill", "decode"))
        assert e.calls == [("/prefill-1/v1/pd_role", {"role": "decode", "drain_timeout": 120})]

    def test_flipped_worker_counts_in_its_new_pool(self, engine: tuple[str, type[Engine]]) -> None:
        """After a flip, replicas and targets regroup without the base scaler launching anything."""
        url, _ = engine
        base = FakeActuator({"prefill": 2, "decode": 2})
        act = make(url, base)
        act.flip_roles(RoleFlip("prefill", "decode"))
        assert (act.target_size("prefill"), act.target_size("decode")) == (1, 3)
        assert "prefill-1" in {r.id for r in act.replicas("decode")}
        assert base.calls == []

    def test_resize_after_flip_does_not_undo_it(self, engine: tuple[str, type[Engine]]) -> None:
        """A decode target of 4 after a flip asks the base scaler for 3 decode workers."""
        url, _ = engine
        base = FakeActuator({"prefill": 2, "decode": 2})
        act = make(url, base)
        act.flip_roles(RoleFlip("prefill", "decode"))
        act.set_target("decode", 4)
        assert base.calls == [("set_target", "decode", 3)]
        assert act.target_size("decode") == 4

    def test_target_below_the_flipped_in_workers_sends_the_excess_home(self, engine: tuple[str, type[Engine]]) -> None:
        """Decode at 1 with two prefill workers flipped in: one goes home and out, decode's own worker goes."""
        url, e = engine
        base = FakeActuator({"prefill": 3, "decode": 1})
        act = make(url, base)
        act.flip_roles(RoleFlip("prefill", "decode", 2))
        act.set_target("decode", 1)
        assert [body["role"] for _, body in e.calls] == ["decode", "decode", "prefill"]
        assert base.calls == [("set_target", "prefill", 2), ("set_target", "decode", 0)]
        assert (act.target_size("prefill"), act.target_size("decode")) == (1, 1)
        assert (len(act.replicas("prefill")), len(act.replicas("decode"))) == (1, 1)

    def test_engine_refusal_is_permanent(self, engine: tuple[str, type[Engine]]) -> None:
        """A 400 from the engine is a permanent error and nothing regroups."""
        url, e = engine
        e.status = 400
        base = FakeActuator({"prefill": 2, "decode": 2})
        act = make(url, base)
        with pytest.raises(ActuationError) as err:
            act.flip_roles(RoleFlip("prefill", "decode"))
        assert err.value.error_class is ErrorClass.PERMANENT
        assert act.target_size("decode") == 2

    def test_too_few_ready_is_transient(self, engine: tuple[str, type[Engine]]) -> None:
        """Flipping more workers than are ready fails transiently."""
        url, _ = engine
        with pytest.raises(ActuationError) as err:
            make(url, FakeActuator({"prefill": 1, "decode": 1})).flip_roles(RoleFlip("prefill", "decode", 2))
        assert err.value.error_class is ErrorClass.TRANSIENT

    def test_dry_run_sends_nothing(self, engine: tuple[str, type[Engine]]) -> None:
        """A dry-run flip logs and sends no request."""
        url, e = engine
        make(url, FakeActuator({"prefill": 2, "decode": 2}), dry_run=True).flip_roles(RoleFlip("prefill", "decode"))
        assert e.calls == []

    def test_needs_a_base_scaler(self) -> None:
        """Without a base scaler the error names params.base."""
        with pytest.raises(ActuationError, match=r"actuator\.params\.base"):
            HttpRoleFlipActuator(POOLS, {}, PluginEnv())

    def test_base_scaler_by_plugin_name(self) -> None:
        """params.base builds the base scaler through the plugin registry."""
        act = HttpRoleFlipActuator(POOLS, {"base": {"name": "fake"}}, PluginEnv())
        assert isinstance(act.base, FakeActuator)
