"""The telemetry HTTP server under idle connections: no thread per connection, silent ones closed."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from pdscale.controller.runtime.telemetry import Telemetry, TelemetryServer

IDLE = 300


@pytest.fixture
def server() -> Iterator[TelemetryServer]:
    s = TelemetryServer(Telemetry(), "127.0.0.1:0")
    s.httpd.idle_timeout_s = 30.0
    s.start()
    yield s
    s.stop()


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        return int(resp.status)


def test_idle_connections_hold_no_threads(server: TelemetryServer) -> None:
    """300 connections that never send add at most a handful of threads, and /healthz still answers."""
    assert _healthz(server.port) == 200  # the worker pool has started
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(IDLE)]
    try:
        time.sleep(0.5)
        assert threading.active_count() - before <= 4
        assert _healthz(server.port) == 200
    finally:
        for s in idle:
            s.close()


def test_silent_connection_is_closed(server: TelemetryServer) -> None:
    """A connection that sends nothing for idle_timeout_s is closed by the server."""
    server.httpd.idle_timeout_s = 0.2
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        started = time.monotonic()
        assert s.recv(1) == b""
        assert time.monotonic() - started < 5


def test_waiting_connections_are_capped(server: TelemetryServer) -> None:
    """Past max_waiting silent connections the oldest is closed first; a new request is still answered."""
    server.httpd.max_waiting = 4
    first = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    rest = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(4)]
    try:
        assert first.recv(1) == b""
        assert _healthz(server.port) == 200
    finally:
        for s in [first, *rest]:
            s.close()
