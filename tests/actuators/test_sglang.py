"""SGLang role switch: out of the router, drained to idle, /pd_role_switch, back under the new role."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from pdscale.actuators.sglang import SglangRoleSwitchActuator, engine_load
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, PoolRole, RoleFlip
from pdscale.controller.runtime.plugins import PluginEnv, Registry
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.testing import FakeActuator

POOLS = {
    n: PoolSettings(name=n, role=PoolRole(n), gpus_per_replica=8, max_replicas=8, drain_timeout_s=30)
    for n in ("prefill", "decode")
}


@dataclass
class World:
    """A router and SGLang engines as one HTTP server records them."""

    url: str = ""
    roles: dict[str, str] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    """In-flight requests per engine; each /metrics poll finishes one."""
    routed: dict[str, str] = field(default_factory=dict)
    """Worker URL -> worker_type the router sends to."""
    events: list[tuple[str, str, int]] = field(default_factory=list)
    """(what, engine, its in-flight count at that moment)."""
    ports: dict[str, int | None] = field(default_factory=dict)
    """Worker URL -> the bootstrap port it was routed with."""
    refuse: str = ""


def _handler(world: World) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _engine(self) -> str:
            return self.path.split("/")[2]

        def do_GET(self) -> None:
            eid = self._engine()
            text = f'sglang:num_running_reqs{{tp_rank="0"}} {world.running[eid]}\nsglang:num_queue_reqs 0\n'
            world.running[eid] = max(0, world.running[eid] - 1)
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/router/workers":
                eid = body["url"].rsplit("/", 1)[1]
                world.routed[body["url"]] = body["worker_type"]
                world.ports[body["url"]] = body.get("bootstrap_port")
                world.events.append(("route_" + body["worker_type"], eid, world.running[eid]))
                return self._send(200, {"status": "accepted"})
            eid = self._engine()
            world.events.append(("switch", eid, world.running[eid]))
            if world.refuse:
                return self._send(400, {"success": False, "message": world.refuse})
            if world.running[eid]:
                return self._send(400, {"success": False, "message": "instance is not idle"})
            old, world.roles[eid] = world.roles[eid], body["new_role"]
            return self._send(200, {"success": True, "message": "ok", "old_role": old, "new_role": body["new_role"]})

        def do_DELETE(self) -> None:
            url = unquote(self.path.removeprefix("/router/workers/"))
            eid = url.rsplit("/", 1)[1]
            world.events.append(("unroute", eid, world.running[eid]))
            world.routed.pop(url, None)
            self._send(200, {})

    return H


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(w))
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
    thread.start()
    w.url = f"http://127.0.0.1:{server.server_address[1]}"
    for eid in ("prefill-1", "prefill-2", "decode-3", "decode-4"):  # FakeActuator's replica ids
        pool = eid.split("-")[0]
        w.roles[eid], w.running[eid] = pool, 0
        w.routed[f"{w.url}/e/{eid}"] = pool
    yield w
    server.shutdown()
    server.server_close()


def make(world: World, **params: Any) -> tuple[SglangRoleSwitchActuator, FakeActuator]:
    base = FakeActuator({"prefill": 2, "decode": 2})
    env = PluginEnv(resources={"base_actuator": base})
    endpoints = {eid: f"{world.url}/e/{eid}" for eid in world.roles}
    p = {"router_url": world.url + "/router", "endpoints": endpoints, "poll_interval_s": 0.01, **params}
    return SglangRoleSwitchActuator(POOLS, p, env, sleep=lambda s: None), base


class TestSglangRoleSwitch:
    def test_switches_only_once_drained_and_out_of_the_router(self, world: World) -> None:
        """The worker leaves the router first, switches at 0 in flight, and comes back as decode."""
        world.running["prefill-1"] = 3
        act, _ = make(world)
        act.flip_roles(RoleFlip("prefill", "decode"))
        kinds = [(what, n) for what, eid, n in world.events if eid == "prefill-1"]
        assert kinds[0] == ("unroute", 3)
        assert ("switch", 0) in kinds
        assert all(n == 0 for what, n in kinds if what == "switch")
        assert kinds[-1] == ("route_decode", 0)
        assert world.roles["prefill-1"] == "decode"
        assert world.routed[f"{world.url}/e/prefill-1"] == "decode"

    def test_flipped_worker_counts_as_decode(self, world: World) -> None:
        """After the switch the overlay moves the worker to the decode pool; the base scaler launches nothing."""
        act, base = make(world)
        act.flip_roles(RoleFlip("prefill", "decode"))
        assert (act.target_size("prefill"), act.target_size("decode")) == (1, 3)
        assert base.calls == []

    def test_drain_timeout_puts_it_back(self, world: World) -> None:
        """A worker still busy at the deadline is routed again as prefill and the flip fails, naming the count."""
        world.running["prefill-1"] = 10_000
        clock = iter(float(t) for t in range(1_000_000))
        act, _ = make(world, drain_timeout_s=5)
        act._clock = lambda: next(clock)
        with pytest.raises(ActuationError, match=r"drain_timeout: \d+ requests still in flight") as err:
            act.flip_roles(RoleFlip("prefill", "decode"))
        assert err.value.error_class is ErrorClass.TRANSIENT
        assert world.roles["prefill-1"] == "prefill"
        assert world.routed[f"{world.url}/e/prefill-1"] == "prefill"
        assert act.target_size("decode") == 2

    def test_unhealthy_engine_is_not_routed_again(self, world: World) -> None:
        """A switch that leaves the engine needing a restart is permanent, and the worker stays unrouted."""
        world.refuse = "instance unhealthy, restart required"
        act, _ = make(world)
        with pytest.raises(ActuationError, match="unhealthy") as err:
            act.flip_roles(RoleFlip("prefill", "decode"))
        assert err.value.error_class is ErrorClass.PERMANENT
        assert f"{world.url}/e/prefill-1" not in world.routed

    def test_prefill_registration_sends_its_bootstrap_port(self, world: World) -> None:
        """A worker flipped to prefill is routed with the bootstrap port configured for it."""
        act, _ = make(world, bootstrap_ports={"decode-3": 8998})
        act.flip_roles(RoleFlip("decode", "prefill"))
        assert world.routed[f"{world.url}/e/decode-3"] == "prefill"
        assert world.ports[f"{world.url}/e/decode-3"] == 8998
        assert world.roles["decode-3"] == "prefill"

    def test_dry_run_touches_nothing(self, world: World) -> None:
        """A dry-run flip neither unroutes nor switches."""
        act, _ = make(world, dry_run=True)
        act.flip_roles(RoleFlip("prefill", "decode"))
        assert world.events == []

    def test_registered_as_a_plugin(self) -> None:
        """The actuator is found by its entry-point name."""
        from pdscale.controller.runtime.plugins import PluginGroup

        assert "sglang_role_switch" in Registry().names(PluginGroup.ACTUATORS)


class TestEngineLoad:
    def test_sums_running_and_queued(self) -> None:
        """Running and queued requests add up, over every label set, in either name form."""
        text = 'sglang:num_running_reqs{tp_rank="0"} 3\nsglang_num_queue_reqs 2\n# HELP x\nother 9\n'
        assert engine_load(text) == 5.0

    def test_nothing_reported_is_idle(self) -> None:
        """Text without the load metrics reads as 0."""
        assert engine_load("up 1\n") == 0.0
