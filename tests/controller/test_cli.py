"""The CLI skeleton: help lists every command; config checking reports errors and exits non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pdscale.controller.cli.main import COMMANDS, main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulator.yaml"


class TestCli:
    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`pdscale --version` prints the installed version."""
        from importlib.metadata import version

        with pytest.raises(SystemExit) as done:
            main(["--version"])
        assert done.value.code == 0
        assert capsys.readouterr().out.strip() == f"pdscale {version('pdscale')}"

    def test_help_lists_commands(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`pdscale --help` names every command of the project."""
        with pytest.raises(SystemExit):
            main(["--help"])
        out = capsys.readouterr().out
        for name, _, _ in COMMANDS:
            assert name in out

    def test_console_script_runs(self) -> None:
        """The installed `pdscale` console script answers --help."""
        proc = subprocess.run(
            [sys.executable, "-m", "pdscale.controller.cli.main", "--help"], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0
        assert "simulate" in proc.stdout

    def test_check_config_ok(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid config passes check-config."""
        assert main(["check-config", str(EXAMPLE)]) == 0
        assert "ok" in capsys.readouterr().out

    def test_check_config_reports_bad_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A broken config fails check-config with the field named."""
        bad = tmp_path / "bad.yaml"
        bad.write_text("pools: []\n")
        assert main(["check-config", str(bad)]) == 1
        assert "pools" in capsys.readouterr().err

    def test_check_config_unknown_policy(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config naming an unknown policy fails with the available names."""
        bad = tmp_path / "bad.yaml"
        bad.write_text(EXAMPLE.read_text().replace("name: slo", "name: slow"))
        assert main(["check-config", str(bad)]) == 1
        assert "available" in capsys.readouterr().err

    def test_plugins_json(self, tmp_path: Path) -> None:
        """`pdscale plugins --json` writes stable keys per group."""
        out = tmp_path / "p.json"
        assert main(["plugins", "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert "static" in [p["name"] for p in data["pdscale.policies"]]


def test_admin_without_a_daemon_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """`pdscale admin status` with nothing listening names the address and the likely fix, not a gRPC dump."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["admin", "--address", f"127.0.0.1:{port}", "--timeout", "2", "status"]) == 1
    err = capsys.readouterr().err
    assert f"no daemon answers at 127.0.0.1:{port}" in err
    assert "pdscale serve" in err


def test_admin_flags_work_after_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    """`pdscale admin status --address A --json -` reads the flags given after the subcommand."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["admin", "status", "--address", f"127.0.0.1:{port}", "--timeout", "2", "--json", "-"]) == 1
    assert f"no daemon answers at 127.0.0.1:{port}" in capsys.readouterr().err


def _k8s_config(tmp_path: Path, per_pool: bool) -> Path:
    import yaml

    root = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "examples" / "simulator.yaml").read_text())
    data["actuator"] = {"name": "kubernetes", "params": {}}
    data["metrics"] = {"source": "prometheus", "params": {"url": "http://127.0.0.1:9"}}
    data.pop("simulator", None)
    for pool in data["pools"]:
        pool.pop("actuator", None)
        if per_pool:
            pool["actuator"] = {"name": f"vllm-{pool['name']}", "namespace": "serving"}
    path = tmp_path / "k8s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_config_catches_a_missing_per_pool_actuator_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kubernetes without pools[].actuator fails check-config, naming the field (it used to pass, then crash)."""
    assert main(["check-config", str(_k8s_config(tmp_path, per_pool=False))]) == 1
    err = capsys.readouterr().err
    assert "actuator 'kubernetes'" in err
    assert "pools[prefill].actuator" in err


def test_check_config_passes_a_complete_kubernetes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With every pool's actuator block, check-config says ok without contacting any cluster."""
    assert main(["check-config", str(_k8s_config(tmp_path, per_pool=True))]) == 0
    assert ": ok" in capsys.readouterr().out


def test_check_config_names_the_extra_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the kubernetes package, check-config names the pip extra instead of a ModuleNotFoundError later."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kubernetes" else real(name, *a))
    assert main(["check-config", str(_k8s_config(tmp_path, per_pool=True))]) == 1
    assert "pip install 'pdscale[kubernetes]'" in capsys.readouterr().err


def test_serve_state_recover_moves_a_damaged_file_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero-length state file is refused in one line; with --state-recover it is moved aside and serve runs."""
    state = tmp_path / "state.db"
    state.write_bytes(b"")
    argv = ["serve", "--config", "examples/simulator.yaml", "--state", str(state), "--max-ticks", "1"]
    argv += ["--admin-listen", "127.0.0.1:0", "--telemetry-listen", "127.0.0.1:0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "is empty" in err
    assert main([*argv, "--state-recover"]) == 0
    moved = [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert len(moved) == 1
    assert moved[0].startswith("state.db.damaged-")
    assert state.stat().st_size > 0
