"""Engines that switch role in place, for role-flip tests: one loopback server answers for every worker.

``POST /<worker>/v1/pd_role {"role": ...}`` is held ``hold_s`` (the engine drains), then the worker serves the new
role and the answer is 200. The switch happens on the engine's side whether or not the caller is still there to
read the answer (a caller killed mid-call does not undo it). A worker never asked serves its home role: the name
before its last ``-`` (``prefill-0003`` serves prefill). ``hook(phase, worker, role)`` is called with
``"arrived"`` when a request comes in and ``"switched"`` once the role changed, before the answer is written.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RoleEngines", "home_role", "role_engines"]


def home_role(worker: str) -> str:
    """The role a worker serves until it is flipped: its name up to the last ``-``."""
    return worker.rsplit("-", 1)[0]


@dataclass
class RoleEngines:
    """State of every worker's engine; ``url`` is the server's base URL."""

    hold_s: float = 0.2
    roles: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    hook: Callable[[str, str, str], None] | None = None
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def role_of(self, worker: str) -> str:
        """The role ``worker`` serves now."""
        with self._lock:
            return self.roles.get(worker, home_role(worker))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        eng = self.server.engines
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        worker, role = self.path.strip("/").split("/", 1)[0], str(body.get("role"))
        with eng._lock:
            eng.calls.append((worker, role))
        if eng.hook is not None:
            eng.hook("arrived", worker, role)
        threading.Event().wait(eng.hold_s)
        with eng._lock:
            eng.roles[worker] = role
        if eng.hook is not None:
            eng.hook("switched", worker, role)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the caller is gone; the switch stands


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    engines: RoleEngines

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a caller killed mid-call is expected here
            super().handle_error(request, client_address)


@contextmanager
def role_engines(hold_s: float = 0.2) -> Iterator[RoleEngines]:
    """Serve the workers' role endpoints on loopback."""
    eng = RoleEngines(hold_s=hold_s)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.engines = eng
    eng.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield eng
    finally:
        server.shutdown()
        server.server_close()
