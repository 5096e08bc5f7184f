"""Daemon processes electing a leader over the emulated API server: start them, wait on the emulator's view,
kill or partition the leader. Shared by tests/controller/test_leader_failover.py and bench/leader_failover.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.k8s_emulator import K8sEmulator, running_emulator

__all__ = ["LEASE", "LeaderCluster", "Timings", "leader_cluster"]

HELPER = Path(__file__).resolve().parent / "leader_daemon.py"
ROOT = Path(__file__).resolve().parents[2]
LEASE = "pdscale"


@dataclass(frozen=True, slots=True)
class Timings:
    """Election timings handed to every daemon (seconds)."""

    lease_s: float = 1.0
    renew_s: float = 0.7
    retry_s: float = 0.2
    tick_s: float = 0.1


@dataclass
class LeaderCluster:
    """An emulator with the two pools' Deployments, and the daemon processes started against it."""

    emu: K8sEmulator
    url: str
    workdir: Path
    timings: Timings
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, identity: str, mode: str = "lease") -> subprocess.Popen[bytes]:
        """Start a daemon named ``identity`` electing by ``mode``; its log goes to ``workdir/<identity>.log``."""
        t = self.timings
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests" / "plugins")))}
        args = ["--lease-s", str(t.lease_s), "--renew-s", str(t.renew_s), "--retry-s", str(t.retry_s), "--mode", mode]
        with (self.workdir / f"{identity}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(HELPER), identity, self.url, str(self.workdir), *args, "--tick-s", str(t.tick_s)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs[identity] = proc
        return proc

    def log(self, identity: str) -> str:
        """What the daemon logged so far."""
        path = self.workdir / f"{identity}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def holder(self) -> str:
        """The Lease's holderIdentity now ("" when none)."""
        lease = self.emu.lease(LEASE) or {}
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def wrote_scale(self, identity: str, after_s: float = 0.0) -> bool:
        """Whether ``identity`` changed a scale after ``after_s`` (time.time)."""
        return any(w.client == identity and w.time_s > after_s for w in list(self.emu.scale_writes))

    def wait(self, check: Callable[[], bool], timeout_s: float = 60.0, what: str = "condition") -> float:
        """Poll ``check`` every 10 ms; returns the time.time it first held. Fails naming ``what`` and any exit."""
        deadline = time.monotonic() + timeout_s
        while not check():
            for name, proc in self.procs.items():
                if proc.poll() is not None and proc.returncode not in (-9, 0):
                    raise AssertionError(f"daemon {name} exited {proc.returncode}:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)
        return time.time()

    def kill(self, identity: str) -> float:
        """kill -9; returns the time.time it was sent."""
        proc = self.procs[identity]
        at = time.time()
        proc.kill()
        proc.wait(timeout=10)
        return at

    def stop_all(self) -> None:
        """SIGKILL whatever still runs."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def leader_cluster(workdir: Path, timings: Timings | None = None) -> Iterator[LeaderCluster]:
    """An emulator serving Deployments ``prefill`` and ``decode``; every daemon started is killed on exit."""
    emu = K8sEmulator()
    emu.create("deployments", "prefill", 1)
    emu.create("deployments", "decode", 1)
    with running_emulator(emu) as (_, url):
        cluster = LeaderCluster(emu, url, workdir, timings or Timings())
        try:
            yield cluster
        finally:
            cluster.stop_all()
