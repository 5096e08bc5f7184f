"""A real Prometheus server for integration tests, plus a tiny text-format 0.0.4 exporter.

``require_prometheus()`` finds the binary: absent, it skips with a clear reason, or fails when ``CI`` is set
(CI installs Debian's ``prometheus`` package, so an absent binary there is a broken environment).

    server = PrometheusServer(targets=["127.0.0.1:8000"], storage_dir=tmp_path / "tsdb")
    server.start()            # free port on 127.0.0.1, 1 s scrape and evaluation interval, waits for /-/ready
    server.query("up")        # instant query through the HTTP API
    server.stop(); server.start()   # same port, same storage dir
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

__all__ = ["CONTENT_TYPE_004", "PrometheusServer", "TextExporter", "free_port", "require_prometheus"]

CONTENT_TYPE_004 = "text/plain; version=0.0.4; charset=utf-8"


def require_prometheus() -> str:
    """Path of the prometheus binary; skips the test when absent (fails instead when CI is set)."""
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if path is None:
        reason = "the prometheus binary is not installed (Debian package 'prometheus'; scripts/test.sh installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}, and CI is set: integration_prometheus tests must run in CI")
        pytest.skip(reason)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """One Prometheus process scraping ``targets`` (host:port, path /metrics) every ``scrape_interval_s``."""

    def __init__(
        self,
        targets: list[str],
        storage_dir: Path,
        *,
        port: int | None = None,
        scrape_interval_s: float = 1.0,
        binary: str | None = None,
        retention: str = "1h",
    ) -> None:
        self.binary = binary or require_prometheus()
        self.targets = targets
        self.storage_dir = storage_dir
        self.port = port or free_port()
        self.scrape_interval_s = scrape_interval_s
        self.retention = retention
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path = storage_dir.parent / f"prometheus-{self.port}.yml"
        self.log_path = storage_dir.parent / f"prometheus-{self.port}.log"

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        self.config_path.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            f"  scrape_timeout: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: pdscale-test\n"
            f"    static_configs:\n      - targets: [{targets}]\n",
            encoding="utf-8",
        )

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        """Start the process and wait until /-/ready answers 200."""
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.storage_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.retention.time={self.retention}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}; log: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s}s; log: {self.log_tail()}")

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of Prometheus' own log."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def query(self, promql: str) -> list[Any]:
        """An instant query's result list."""
        r = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        result: list[Any] = r.json()["data"]["result"]
        return result

    def metric_names(self) -> list[str]:
        """Prometheus' own list of metric names (``/api/v1/label/__name__/values``)."""
        r = requests.get(f"{self.url}/api/v1/label/__name__/values", timeout=5)
        r.raise_for_status()
        names: list[str] = r.json()["data"]
        return names

    def wait_for(self, promql: str, check: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        """Poll ``promql`` until ``check(result)``; raises TimeoutError with the last result."""
        deadline = time.monotonic() + timeout_s
        result: list[Any] = []
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
                if check(result):
                    return result
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"{promql}: condition not met in {timeout_s}s; last result {result}")


class TextExporter:
    """Serves ``render()`` as Prometheus text format 0.0.4 on 127.0.0.1 (``/metrics``)."""

    def __init__(self, render: Callable[[], str], port: int = 0) -> None:
        self.render = render
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_004)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="text-exporter", daemon=True
        )

    @property
    def target(self) -> str:
        """host:port for a scrape config."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> TextExporter:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
