"""kill -9 of the real daemon (``pdscale serve``) while it scales and flips, restarted on the same state file.

The cluster lives outside the daemon: the project's emulated Kubernetes API server holds the two pools'
Deployments and pods, and one loopback engine per worker switches role in place (``http_role_flip`` over the
``kubernetes`` base scaler, the role overlay in ``<state.path>.flips.json``). A seeded script of goals keeps the
daemon resizing and flipping; the test kills it with SIGKILL at seeded moments (inside a ``/scale`` write after it
took effect, when a flip reaches an engine, after the engine switched but before it answered, or at a random
time), restarts it, and at the end holds one goal. Checked from the cluster's side: the fleet converges to the
daemon's targets, every worker serves the pool the daemon counts it in (none in two roles), no intent or decision
is left pending, no "external change" is reported, and the GPUs held never exceed the budget.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdscale.controller.runtime.record import Outcome
from pdscale.controller.runtime.store import SqliteStore
from tests.helpers.k8s_emulator import K8sEmulator, running_emulator, write_kubeconfig
from tests.helpers.kill9_plugins import POOLS, write_dist_info
from tests.helpers.role_engines import RoleEngines, role_engines

pytestmark = [pytest.mark.integration_k8s, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("PDSCALE_KILL9_SEED", "16"))  # another seed for a soak run
KILLS = 6
GPUS_PER_REPLICA = 4
BUDGET_GPUS = 24
FINAL = (2, 3)
MODES = ("scale_applied", "flip_arrived", "flip_switched", "random")
SERVE = "import sys; from pdscale.controller.cli.main import main; sys.exit(main(sys.argv[1:]))"


class CountingEmulator(K8sEmulator):
    """Measures the GPUs the cluster holds (every pod, starting or not) after each request; can kill the daemon
    inside a ``/scale`` write, after it took effect and before the answer."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_gpus = 0
        self.kill_on_scale: Callable[[], None] | None = None

    def handle(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        out = super().handle(method, path, *args, **kwargs)
        with self._cond:
            self.max_gpus = max(self.max_gpus, GPUS_PER_REPLICA * len(self.pods))
        if method in ("PUT", "PATCH") and path.endswith("/scale") and self.kill_on_scale is not None:
            kill, self.kill_on_scale = self.kill_on_scale, None
            kill()
        return out


def _goals(rng: random.Random, n: int) -> list[list[int]]:
    """Goals within the budget; about 40 % move replicas between the pools at the same total (flips)."""
    cap = BUDGET_GPUS // GPUS_PER_REPLICA
    out, cur = [], [3, 1]
    for _ in range(n):
        if rng.random() < 0.4 and sum(cur) >= 3:
            k = rng.choice((1, 2))
            a = rng.randrange(2)
            if cur[a] - k >= 1:
                cur = [cur[0] - k, cur[1] + k] if a == 0 else [cur[0] + k, cur[1] - k]
        else:
            cur = [rng.randint(1, 4), rng.randint(1, 4)]
            while sum(cur) > cap:
                cur[rng.randrange(2)] -= 1
        out.append(list(cur))
    return out


def _config(tmp: Path, kubeconfig: Path, engines: RoleEngines, policy: dict[str, Any]) -> Path:
    pools = [
        {
            "name": p,
            "role": p,
            "gpus_per_replica": GPUS_PER_REPLICA,
            "min_replicas": 1,
            "max_replicas": 6,
            "drain_timeout_s": 5,
            "actuator": {"name": p},
        }
        for p in POOLS
    ]
    cfg = {
        "tick_s": 0.2,
        "pools": pools,
        "budget": {"max_gpus": BUDGET_GPUS},
        "policy": {"name": "scripted", "params": policy},
        "forecasting": {"model": "last_value"},
        "metrics": {"source": "steady"},
        "actuator": {
            "name": "http_role_flip",
            "on_external_change": "hold",
            "params": {
                "base": {"name": "kubernetes", "params": {"kubeconfig": str(kubeconfig), "retry_base_s": 0.0}},
                "url": engines.url + "/$replica/v1/pd_role",
                "retry_base_s": 0.0,
            },
        },
        "guards": {"hold_while_starting": False, "scale_down_window_s": 0, "max_step_down": 8},
        "admin": {"enabled": False},
        "telemetry": {"enabled": False},
        "state": {"path": str(tmp / "state.db")},
        "logging": {"format": "json"},
    }
    path = tmp / "pdscale.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _serve(tmp: Path, config: Path, n: int) -> subprocess.Popen[bytes]:
    paths = (str(ROOT), str(ROOT / "tests" / "plugins"), str(write_dist_info(tmp / "plugins")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
    with (tmp / f"serve-{n}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _log(tmp: Path, n: int) -> str:
    return (tmp / f"serve-{n}.log").read_text()


def _wait(cond: Callable[[], bool], proc: subprocess.Popen[bytes], tmp: Path, n: int, timeout_s: float = 60.0) -> None:
    """Poll ``cond`` while daemon ``n`` runs; fail with its log's tail if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert proc.poll() is None, _log(tmp, n)[-3000:]
        assert time.monotonic() < deadline, f"timed out: {_log(tmp, n)[-3000:]}"
        time.sleep(0.05)


def _fleet(emu: K8sEmulator, overlay: Path) -> dict[str, list[str]]:
    """Workers per pool as the daemon's overlay groups them (pods of the home Deployment, then the flips)."""
    where = json.loads(overlay.read_text())["where"] if overlay.exists() else {}
    out: dict[str, list[str]] = {p: [] for p in POOLS}
    for home in POOLS:
        for pod in emu.pods_of(home):
            if not pod["metadata"].get("deletionTimestamp"):
                name = pod["metadata"]["name"]
                out[where.get(name, home)].append(name)
    return out


def _converged(emu: K8sEmulator, overlay: Path, engines: RoleEngines) -> bool:
    fleet = _fleet(emu, overlay)
    running = all(p["status"]["phase"] == "Running" for home in POOLS for p in emu.pods_of(home))
    roles_agree = all(engines.role_of(w) == pool for pool, ws in fleet.items() for w in ws)
    return running and roles_agree and tuple(len(fleet[p]) for p in POOLS) == FINAL


def _settle(
    emu: K8sEmulator, overlay: Path, engines: RoleEngines, proc: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Wait for the last daemon's first decision, then for convergence; stop it with SIGTERM a second later."""
    _wait(lambda: '"event": "scale_decision"' in _log(tmp_path, KILLS), proc, tmp_path, KILLS)
    deadline = time.monotonic() + 60
    while not _converged(emu, overlay, engines):
        assert proc.poll() is None, _log(tmp_path, KILLS)[-3000:]
        assert time.monotonic() < deadline, f"no convergence: {_fleet(emu, overlay)}\n{_log(tmp_path, KILLS)[-6000:]}"
        time.sleep(0.1)
    time.sleep(1.0)  # a few more ticks at the goal: nothing may move again
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.timeout(240)
def test_kill_9_while_scaling_and_flipping_converges_from_the_clusters_side(tmp_path: Path) -> None:
    """SIGKILLed at seeded moments, the restarted daemon converges; nothing pending, in two roles, or over budget."""
    rng = random.Random(SEED)
    emu = CountingEmulator(start_delay_s=0.3)
    with running_emulator(emu) as (_, url), role_engines(hold_s=0.3) as engines:
        emu.create("deployments", "prefill", 3)
        emu.create("deployments", "decode", 1)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)
        script = {"start_s": time.time(), "step_s": 1.0, "steps": _goals(rng, 40)}
        config = _config(tmp_path, kubeconfig, engines, script)
        hit: list[str] = []
        modes = rng.sample([*MODES, *rng.sample(MODES, KILLS - len(MODES))], KILLS)  # each kind once or more
        for n, mode in enumerate(modes):
            proc = _serve(tmp_path, config, n)
            killed = threading.Event()
            t0 = time.monotonic()

            def kill(
                mode: str, proc: subprocess.Popen[bytes] = proc, killed: threading.Event = killed, t0: float = t0
            ) -> None:
                if not killed.is_set():
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)
                    hit.append(f"{mode}@{time.monotonic() - t0:.1f}s")

            if mode == "scale_applied":
                emu.kill_on_scale = lambda kill=kill: kill("scale_applied")  # type: ignore[misc]
            elif mode.startswith("flip_"):
                phase = mode.removeprefix("flip_")
                engines.hook = lambda p, w, r, kill=kill, phase=phase: kill(f"flip_{p}") if p == phase else None  # type: ignore[misc]
            else:
                delay = rng.uniform(3.0, 7.0)  # start-up takes ~2 s; then a tick every 0.2 s
                threading.Timer(delay, kill, args=("random",)).start()
            if not killed.wait(20.0):
                kill(f"fallback({mode})")  # the moment never came: kill it anyway
            proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL, (tmp_path / f"serve-{n}.log").read_text()[-3000:]
            emu.kill_on_scale, engines.hook = None, None

        final = _config(tmp_path, kubeconfig, engines, {"hold": list(FINAL)})
        proc = _serve(tmp_path, final, KILLS)
        overlay = tmp_path / "state.db.flips.json"
        # The fleet may already stand at the goal (the last kill landed after its write): wait for this daemon's
        # first decision, which comes after it settled the open intents, before judging convergence.
        try:
            _settle(emu, overlay, engines, proc, tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()  # a failed check leaves no daemon behind
        assert _converged(emu, overlay, engines)

    logs = "".join((tmp_path / f"serve-{n}.log").read_text() for n in range(KILLS + 1))
    store = SqliteStore(tmp_path / "state.db")
    try:
        assert store.open_intents() == []
        pending = [
            (r.id, p) for r in store.query(limit=100_000) for p, o in r.outcomes.items() if o.outcome is Outcome.PENDING
        ]
        assert pending == []
        newest = store.recent(1)[0].decision
        assert tuple(newest.pools[p].target for p in POOLS) == FINAL
        assert all("paused" not in newest.pools[p].guards for p in POOLS)
    finally:
        store.close()
    assert json.loads(overlay.read_text())["pending"] == {}
    assert "external_change_" not in logs, "a restart took pdscale's own write for another owner's"
    assert emu.max_gpus <= BUDGET_GPUS
    flips = sum(1 for _ in engines.calls)
    scale_writes = sum(1 for m, p in emu.requests if m in ("PUT", "PATCH") and p.endswith("/scale"))
    print(
        f"kill9: kills={KILLS} modes={hit} flip_calls={flips} scale_writes={scale_writes} "
        f"intents_settled={logs.count('intent_reconciled')} flips_resumed={logs.count('role_flip_resumed')} "
        f"max_gpus={emu.max_gpus}/{BUDGET_GPUS} roles_checked={sum(len(v) for v in _fleet(emu, overlay).values())}"
    )


@pytest.mark.timeout(120)
def test_kill_9_at_rest_after_a_flip_keeps_the_flip(tmp_path: Path) -> None:
    """Killed after a flip completed, the restarted daemon counts the worker where it serves and flips nothing."""
    emu = CountingEmulator()
    with running_emulator(emu) as (_, url), role_engines(hold_s=0.05) as engines:
        emu.create("deployments", "prefill", 3)
        emu.create("deployments", "decode", 1)
        config = _config(tmp_path, write_kubeconfig(tmp_path / "kubeconfig", url), engines, {"hold": [2, 2]})
        overlay = tmp_path / "state.db.flips.json"
        proc = _serve(tmp_path, config, 0)
        _wait(
            lambda: engines.calls == [("prefill-0001", "decode")] and "role_flipped" in _log(tmp_path, 0),
            proc,
            tmp_path,
            0,
        )
        time.sleep(1.0)  # the flip's intent and decision are settled; the daemon ticks at its goal
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        proc = _serve(tmp_path, config, 1)
        _wait(lambda: "scale_decision" in _log(tmp_path, 1), proc, tmp_path, 1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    logs = (tmp_path / "serve-1.log").read_text()
    assert "external_change_" not in logs, "the restart took pdscale's own flip for another owner's change"
    assert engines.calls == [("prefill-0001", "decode")], "the restart flipped again"
    assert {p: len(ws) for p, ws in _fleet(emu, overlay).items()} == {"prefill": 2, "decode": 2}
    assert engines.role_of("prefill-0001") == "decode"
