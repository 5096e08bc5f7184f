"""A daemon process for crash tests: its actuator keeps targets in a JSON file and logs every set_target call.

Run as ``python tests/helpers/crash_daemon.py STATE_DB WORKDIR [--crash-after-set] [--ticks N]``. With
``--crash-after-set`` the first set_target call takes effect, writes ``WORKDIR/crash-point`` and then hangs, so
the test can kill -9 the process between the call and its recorded outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pdscale.controller.core.types import ReplicaInfo, ReplicaState, Signals
from pdscale.controller.daemon import Daemon
from pdscale.controller.runtime.settings import parse_settings
from pdscale.testing import StaticMetricsSource


class FileActuator:
    """Targets persisted in ``targets.json``; every set_target appended to ``calls.log`` (fsynced)."""

    def __init__(self, workdir: Path, crash_after_set: bool) -> None:
        self.workdir = workdir
        self.crash_after_set = crash_after_set
        self.targets_file = workdir / "targets.json"
        if not self.targets_file.exists():
            self.targets_file.write_text(json.dumps({"prefill": 1, "decode": 1}))

    def _targets(self) -> dict[str, int]:
        data: dict[str, int] = json.loads(self.targets_file.read_text())
        return data

    def target_size(self, pool: str) -> int:
        return self._targets()[pool]

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        return [
            ReplicaInfo(id=f"{pool}-{i}", pool=pool, state=ReplicaState.READY) for i in range(self._targets()[pool])
        ]

    def set_target(self, pool: str, replicas: int) -> None:
        with (self.workdir / "calls.log").open("a", encoding="utf-8") as fh:
            fh.write(f"{pool} {replicas}\n")
            fh.flush()
            os.fsync(fh.fileno())
        targets = self._targets()
        targets[pool] = replicas
        self.targets_file.write_text(json.dumps(targets))
        marker = self.workdir / "crash-point"
        if self.crash_after_set and not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(120)  # the test kills us here: the call took effect, its outcome is not recorded


def two_pool_settings(db: str, replicas: dict[str, int], name: str, **extra: object) -> Any:
    """Settings of the crash tests: 4-GPU prefill and decode pools (1-8 replicas), the ``static`` policy at
    ``replicas``, the fake actuator holding on an external change, admin and telemetry off; ``extra`` adds keys."""
    return parse_settings(
        {
            "tick_s": 30,
            "pools": [
                {"name": "prefill", "role": "prefill", "gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8},
                {"name": "decode", "role": "decode", "gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8},
            ],
            "policy": {"name": "static", "params": {"replicas": replicas}},
            "forecasting": {"model": "last_value"},
            "metrics": {"source": "static"},
            "actuator": {"name": "fake", "on_external_change": "hold"},
            "admin": {"enabled": False},
            "telemetry": {"enabled": False},
            "state": {"path": db},
            **extra,
        },
        name,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--crash-after-set", action="store_true")
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    settings = two_pool_settings(args.db, {"prefill": 3, "decode": 1}, "crash-daemon", logging={"format": "json"})
    busy = Signals(prompt_tokens_per_s=1000.0, request_rate_per_s=1.0, running_requests=10.0, waiting_requests=0.0)
    source = StaticMetricsSource.ok({"prefill": busy, "decode": busy})
    clock_start = time.time()
    daemon = Daemon(
        settings,
        source=source,
        actuator=FileActuator(args.workdir, args.crash_after_set),
        clock=lambda: clock_start,
        max_ticks=args.ticks,
        wall_per_tick_s=0.01,
    )
    return asyncio.run(daemon.run(install_signals=False))


if __name__ == "__main__":
    raise SystemExit(main())
