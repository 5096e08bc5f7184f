"""The daemon: restart restores operator state, SIGHUP reloads good settings and keeps the old on bad ones,
SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pdscale.controller.core.types import Override, OverrideMode, Signal
from pdscale.controller.daemon import Daemon
from pdscale.controller.runtime.settings import load_settings

BASE = {
    "tick_s": 0.05,
    "pools": [
        {"name": "prefill", "role": "prefill", "gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8,
         "initial_replicas": 2},
        {"name": "decode", "role": "decode", "gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8,
         "initial_replicas": 2},
    ],
    "policy": {"name": "static", "params": {"replicas": {"prefill": 3}}},
    "forecasting": {"model": "last_value"},
    "metrics": {"source": "static"},
    "actuator": {"name": "fake"},
    "admin": {"listen": "127.0.0.1:0"},
    "telemetry": {"listen": "127.0.0.1:0"},
}  # fmt: skip


def _config(tmp: Path, **changes: object) -> Path:
    data = {**BASE, "state": {"path": str(tmp / "state.db")}, **changes}
    path = tmp / "pdscale.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_restart_restores_pause_and_overrides(tmp_path: Path) -> None:
    """Pause state and overrides set on one daemon are in force on the next one from the same state file."""
    path = _config(tmp_path)
    first = Daemon(load_settings(path), config_path=path)
    first.controls.pause("decode", "maintenance")
    first.controls.set_override("prefill", OverrideMode.MAX, 4, None, 0.0, "cap")
    first.store.close()
    second = Daemon(load_settings(path), config_path=path)
    assert second.rec.paused == {"decode"}
    assert second.rec.overrides["prefill"] == Override("prefill", OverrideMode.MAX, 4, None, "cap")
    second.store.close()


def test_reload_applies_good_settings(tmp_path: Path) -> None:
    """A valid edited file swaps the policy, SLO and budget in place."""
    path = _config(tmp_path)
    d = Daemon(load_settings(path), config_path=path)
    _config(tmp_path, slo={"ttft_ms": 400}, budget={"max_gpus": 48}, policy={"name": "static", "params": {}})
    assert d.reload()
    assert (d.rec.slo.ttft_ms, d.rec.budget_gpus, d.rec.policy_params) == (400, 48, {})
    d.store.close()


def test_reload_keeps_old_settings_on_bad_file(tmp_path: Path) -> None:
    """An invalid file (bad policy parameter) changes nothing and is counted as a failed reload."""
    path = _config(tmp_path)
    d = Daemon(load_settings(path), config_path=path)
    policy = d.rec.policy
    _config(tmp_path, slo={"ttft_ms": 400}, policy={"name": "static", "params": {"bogus": 1}})
    assert not d.reload()
    assert d.rec.policy is policy
    assert d.rec.slo.ttft_ms == 1000
    assert d.reload_failures == 1
    d.store.close()


def test_runs_ticks_and_persists(tmp_path: Path) -> None:
    """run() ticks, records decisions in the state file and stops after max_ticks with exit code 0."""
    path = _config(tmp_path)
    d = Daemon(load_settings(path), config_path=path, max_ticks=3, wall_per_tick_s=0.0)
    assert asyncio.run(d.run(install_signals=False)) == 0
    assert d.telemetry.ready
    again = Daemon(load_settings(path), config_path=path)
    assert again.store.count() == 3
    again.store.close()


def _wait_for(log: Path, text: str, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        time.sleep(0.05)
    return False


def test_sighup_bad_then_sigterm_subprocess(tmp_path: Path) -> None:
    """A served daemon logs a rejected reload on SIGHUP with a broken file, then exits 0 on SIGTERM."""
    path = _config(tmp_path, tick_s=0.2)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pdscale.controller.cli.main",
                "--log-format",
                "json",
                "serve",
                "--config",
                str(path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert _wait_for(log, "scale_decision")
            path.write_text("pools: [")
            proc.send_signal(signal.SIGHUP)
            assert _wait_for(log, "config_reload_rejected")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "daemon_stopped" in log.read_text()


class _HistorySource:
    """A metrics source that can read the past: one day of 5 req/s for prefill's arrivals."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, float]] = []

    def fetch(self, now: float) -> dict[str, object]:
        return {}

    def history(self, pool: str, start_s: float, end_s: float, step_s: float) -> dict[object, object]:
        self.asked.append((pool, start_s, end_s))
        times = [end_s - 86_400.0 + i * step_s for i in range(int(86_400.0 // step_s))]
        return {Signal.REQUEST_RATE: (times, [5.0] * len(times))} if pool == "prefill" else {}


def test_start_up_backfills_the_seasonal_history(tmp_path: Path) -> None:
    """A daemon whose source reads the past asks for forecasting.backfill_days and feeds the seasonal book."""
    path = _config(tmp_path, forecasting={"model": "last_value", "backfill_days": 3})
    src = _HistorySource()
    now = 2_000_000_000.0
    d = Daemon(load_settings(path), config_path=path, source=src, clock=lambda: now)  # type: ignore[arg-type]
    try:
        assert sorted(p for p, _, _ in src.asked) == ["decode", "prefill"]
        assert all(start == now - 3 * 86_400.0 and end == now for _, start, end in src.asked)
        hist = d.rec.seasonal.get("prefill", Signal.REQUEST_RATE)
        assert hist is not None
        assert float(hist.values(now - 7200.0, now - 3600.0).mean()) == 5.0
    finally:
        d.store.close()


def test_backfill_days_zero_reads_nothing(tmp_path: Path) -> None:
    """forecasting.backfill_days: 0 turns the start-up read off."""
    path = _config(tmp_path, forecasting={"model": "last_value", "backfill_days": 0})
    src = _HistorySource()
    d = Daemon(load_settings(path), config_path=path, source=src, clock=lambda: 2e9)  # type: ignore[arg-type]
    d.store.close()
    assert src.asked == []
