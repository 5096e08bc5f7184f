"""A real local Ray head on loopback with the test Serve app deployed through the REST API."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

__all__ = ["APP_CONFIG", "RayHead", "deploy", "free_port", "ray_head", "wait_running"]

REPO = Path(__file__).resolve().parents[2]

APP_CONFIG: dict[str, Any] = {
    "name": "pd",
    "route_prefix": "/pd",
    "import_path": "tests.helpers.ray_serve_app:app",
    "deployments": [{"name": "Prefill", "num_replicas": 1}, {"name": "Decode", "num_replicas": 1}],
}


def free_port() -> int:
    """A currently free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RayHead:
    """A running head: GCS address and dashboard URL."""

    address: str
    dashboard_url: str


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


@contextmanager
def ray_head(num_cpus: int = 4, timeout_s: float = 120.0, extra_args: Sequence[str] = ()) -> Iterator[RayHead]:
    """Start ``ray start --head`` on loopback (plus ``extra_args``); ``ray stop`` on exit."""
    ray = shutil.which("ray")
    if ray is None:
        raise RuntimeError("the ray CLI is not installed (pip install 'pdscale[ray]')")
    port, dash = free_port(), free_port()
    cmd = [
        ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=true",
        "--disable-usage-stats", *extra_args,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=_env(), capture_output=True, timeout=timeout_s)
    head = RayHead(address=f"127.0.0.1:{port}", dashboard_url=f"http://127.0.0.1:{dash}")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(head.dashboard_url + "/api/version", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        yield head
    finally:
        subprocess.run([ray, "stop", "--force"], env=_env(), capture_output=True, timeout=120, check=False)


def deploy(head: RayHead, http_port: int, apps: list[dict[str, Any]] | None = None) -> None:
    """PUT the test app's declarative config (Serve starts on first PUT)."""
    body = {"http_options": {"host": "127.0.0.1", "port": http_port}, "applications": apps or [APP_CONFIG]}
    resp = requests.put(head.dashboard_url + "/api/serve/applications/", json=body, timeout=60)
    resp.raise_for_status()


def wait_running(head: RayHead, app: str, counts: dict[str, int], timeout_s: float = 120.0) -> dict[str, Any]:
    """Wait until each deployment in ``counts`` has exactly that many RUNNING replicas and no others."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = requests.get(head.dashboard_url + "/api/serve/applications/", timeout=10).json()
        last = (got.get("applications") or {}).get(app) or {}
        deps = last.get("deployments") or {}
        states = {name: [r["state"] for r in (deps.get(name) or {}).get("replicas") or []] for name in counts}
        if all(s.count("RUNNING") == n and len(s) == n for s, n in zip(states.values(), counts.values(), strict=True)):
            return last
        time.sleep(0.5)
    raise TimeoutError(f"deployments did not reach {counts}: {last.get('status')} {last.get('message', '')}")
