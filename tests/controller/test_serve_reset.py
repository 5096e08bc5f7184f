"""Precedence at restart: the state file's admin changes are logged, and --reset-runtime-state returns to the file."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from pdscale.controller.cli.main import main
from pdscale.controller.cli.serve import reset_runtime_state
from pdscale.controller.core.types import OverrideMode
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
    "slo": {"ttft_ms": 1000, "itl_ms": 50},
    "budget": {"max_gpus": 48},
    "policy": {"name": "static", "params": {}},
    "forecasting": {"model": "last_value"},
    "metrics": {"source": "static"},
    "actuator": {"name": "fake"},
    "admin": {"listen": "127.0.0.1:0"},
    "telemetry": {"listen": "127.0.0.1:0"},
}  # fmt: skip


def _admin_changed(tmp: Path) -> Path:
    """A settings file and a state file where the admin API changed SLO, budget, an override and a pause."""
    path = tmp / "pdscale.yaml"
    path.write_text(yaml.safe_dump({**BASE, "state": {"path": str(tmp / "state.db")}}))
    d = Daemon(load_settings(path), config_path=path)
    d.controls.update_slo(400.0, None, None)
    d.controls.update_budget(32)
    d.controls.set_override("prefill", OverrideMode.MAX, 4, None, 0.0, "cap")
    d.controls.pause("decode", "maintenance")
    d.store.close()
    return path


def test_state_restored_lists_slo_and_budget_from_the_state_file(tmp_path: Path) -> None:
    """At restart the state_restored line shows the stored SLO and budget that beat the file, and says so."""
    path = _admin_changed(tmp_path)
    with capture_logs() as logs:
        d = Daemon(load_settings(path), config_path=path)
    d.store.close()
    line = next(e for e in logs if e["event"] == "state_restored")
    assert line["slo"]["ttft_ms"] == 400.0
    assert line["budget_gpus"] == 32
    assert set(line["from_state"]) == {"slo", "budget"}


def test_reset_runtime_state_returns_to_the_file_and_keeps_history(tmp_path: Path) -> None:
    """After the reset the next daemon runs the file's SLO and budget, no override or pause, same decisions."""
    path = _admin_changed(tmp_path)
    first = Daemon(load_settings(path), config_path=path)
    first.rec.run_once(1000.0)
    decisions = first.store.count()
    first.store.close()
    cleared = reset_runtime_state(str(tmp_path / "state.db"))
    assert set(cleared) == {"slo", "budget", "override:prefill", "pause:decode"}
    second = Daemon(load_settings(path), config_path=path)
    assert (second.rec.slo.ttft_ms, second.rec.budget_gpus) == (1000, 48)
    assert not second.rec.overrides
    assert not second.rec.paused
    assert second.store.count() == decisions >= 1
    second.store.close()


def test_serve_flag_clears_before_the_daemon_starts(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`pdscale serve --reset-runtime-state` logs what it cleared and the daemon starts on the file's SLO."""
    path = _admin_changed(tmp_path)
    argv = ["--log-format", "json", "serve", "--config", str(path), "--max-ticks", "1", "--reset-runtime-state"]
    assert main(argv) == 0
    events = {}
    for line in capfd.readouterr().err.splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            events.setdefault(e["event"], e)
    assert "slo" in events["runtime_state_reset"]["cleared"]
    assert events["state_restored"]["slo"]["ttft_ms"] == 1000
    assert events["state_restored"]["from_state"] == []
