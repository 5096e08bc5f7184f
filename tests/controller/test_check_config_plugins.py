"""check-config builds every plugin offline with its params: a bad params block fails with its field named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pdscale.controller.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulator.yaml"


def _config(tmp_path: Path, **sections: Any) -> str:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(sections)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    return err


def test_bad_policy_params_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown slo parameter fails with policy.params and the parameter's name."""
    cfg = _config(tmp_path, policy={"name": "slo", "params": {"bogus": 1}})
    err = _error(capsys, ["check-config", cfg])
    assert err.startswith("policy.params: ")
    assert "'bogus'" in err


def test_bad_forecaster_params_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown ensemble parameter fails with forecasting.params and the parameter's name."""
    cfg = _config(tmp_path, forecasting={"model": "ensemble", "params": {"bogus": 1}})
    err = _error(capsys, ["check-config", cfg])
    assert err.startswith("forecasting.params: ")
    assert "'bogus'" in err


def test_bad_prometheus_params_name_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt prometheus parameter fails naming metrics.params.<field>, without connecting."""
    cfg = _config(tmp_path, metrics={"source": "prometheus", "params": {"url": "http://127.0.0.1:1", "bogus": 1}})
    err = _error(capsys, ["check-config", cfg])
    assert "metrics.params.bogus: unknown field" in err


def test_simulator_source_refuses_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Params given to the simulator source, which takes none, fail naming metrics.params."""
    cfg = _config(tmp_path, metrics={"source": "simulator", "params": {"bogus": 1}})
    err = _error(capsys, ["check-config", cfg])
    assert "metrics.params: the simulator source takes no params" in err


def test_prometheus_token_env_need_not_exist_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bearer_token read from an env var unset on this machine still passes (it is the daemon's env)."""
    monkeypatch.delenv("PDSCALE_TEST_UNSET_TOKEN", raising=False)
    params = {"url": "http://127.0.0.1:1", "bearer_token": {"env": "PDSCALE_TEST_UNSET_TOKEN"}}
    cfg = _config(tmp_path, metrics={"source": "prometheus", "params": params})
    assert main(["check-config", cfg]) == 0
    assert "ok" in capsys.readouterr().out
