"""A fake inference engine per replica for drain tests: holds requests in flight and reports them like vLLM.

- ``POST /v1/completions`` (any POST path but ``/drain``): held ``hold_s`` seconds, then 200; refused with 503
  once the engine stops accepting;
- ``GET /metrics``: ``vllm:num_requests_running{model_name="fake"} <in flight>`` (Prometheus text);
- ``POST /drain``: stop accepting new requests (what an engine-side drain endpoint does).

``kill()`` is the replica going away (pod deleted, instance terminated): requests still held are aborted
(the connection closes without an answer) and counted in ``aborted``; the client sees a lost request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

__all__ = ["FakeEngine", "Load", "fake_engines"]


@dataclass
class FakeEngine:
    """State of one fake engine; ``url`` is set once it serves."""

    name: str
    hold_s: float = 1.0
    accepting: bool = True
    inflight: int = 0
    completed: int = 0
    aborted: int = 0
    refused: int = 0
    url: str = ""
    _killed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: Any = None

    def kill(self) -> int:
        """Remove the replica now: abort what is in flight; returns how many requests that cut."""
        with self._lock:
            cut = self.inflight
            self.accepting = False
        self._killed.set()
        return cut


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        eng = self.server.engine
        if self.path.startswith("/metrics"):
            with eng._lock:
                n = eng.inflight
            self._reply(
                200,
                "# TYPE vllm:num_requests_running gauge\n"
                f'vllm:num_requests_running{{model_name="fake"}} {float(n)}\n'
                f'vllm:num_requests_waiting{{model_name="fake"}} 0.0\n',
            )
            return
        self._reply(404, "not found")

    def do_POST(self) -> None:
        eng = self.server.engine
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/drain"):
            with eng._lock:
                eng.accepting = False
            self._reply(200, "draining")
            return
        with eng._lock:
            if not eng.accepting or eng._killed.is_set():
                eng.refused += 1
                refused = True
            else:
                eng.inflight += 1
                refused = False
        if refused:
            self._reply(503, "not accepting")
            return
        killed = eng._killed.wait(eng.hold_s)
        with eng._lock:
            eng.inflight -= 1
            if killed:
                eng.aborted += 1
            else:
                eng.completed += 1
        if killed:
            self.close_connection = True
            return
        self._reply(200, "done")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    engine: FakeEngine


@contextmanager
def fake_engines(names: list[str], hold_s: float = 1.0) -> Iterator[dict[str, FakeEngine]]:
    """Serve one fake engine per name on loopback; yields them by name."""
    out: dict[str, FakeEngine] = {}
    threads = []
    try:
        for name in names:
            eng = FakeEngine(name, hold_s=hold_s)
            server = _Server(("127.0.0.1", 0), _Handler)
            server.engine = eng
            eng._server = server
            eng.url = f"http://127.0.0.1:{server.server_address[1]}"
            t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            threads.append(t)
            out[name] = eng
        yield out
    finally:
        for eng in out.values():
            eng._killed.set()
            eng._server.shutdown()
            eng._server.server_close()


@dataclass
class Load:
    """Requests sent from threads; each ends ok, refused (503) or lost (no answer)."""

    ok: int = 0
    refused: int = 0
    lost: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, url: str, count: int) -> None:
        """Start ``count`` requests to the engine at ``url``."""
        for _ in range(count):
            t = threading.Thread(target=self._one, args=(url,), daemon=True)
            t.start()
            self._threads.append(t)

    def _one(self, url: str) -> None:
        try:
            code = requests.post(url + "/v1/completions", json={"prompt": "x"}, timeout=30).status_code
        except requests.RequestException:
            code = 0
        with self._lock:
            if code == 200:
                self.ok += 1
            elif code == 503:
                self.refused += 1
            else:
                self.lost += 1

    def wait(self, timeout_s: float = 30.0) -> None:
        """Wait until every request sent has ended."""
        for t in self._threads:
            t.join(timeout_s)
