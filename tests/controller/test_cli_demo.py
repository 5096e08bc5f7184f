"""``pdscale demo``: the run window's summary with its SLO and baseline, and the logs a person or a pipe gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import structlog

from pdscale.controller.cli.main import main
from pdscale.controller.runtime.logconfig import compact_console
from pdscale.simulator.traces import bundled_trace

QUIET = ["--admin-listen", "127.0.0.1:0", "--telemetry-listen", "127.0.0.1:0", "--speedup", "3000", "--plot", ""]


def test_summary_counts_only_the_controlled_window(tmp_path: Path) -> None:
    """After --duration the summary counts the requests that arrived in the 4 controlled ticks, not the trace."""
    out = tmp_path / "s.json"
    assert main(["demo", "--duration", "120", *QUIET, "--no-baseline", "--json", str(out)]) == 0
    story = json.loads(out.read_text())
    arrived = int(np.count_nonzero(bundled_trace("azure-conv").arrival_s <= 4 * 30.0))
    assert story["window_s"] == 120.0
    assert story["run"]["requests"] == arrived
    assert story["run"]["completed"] == arrived


def test_summary_states_slo_and_the_static_baseline(tmp_path: Path) -> None:
    """The summary names the SLO targets and the best static split simulated on the same requests."""
    out = tmp_path / "s.json"
    assert main(["demo", "--duration", "60", *QUIET, "--json", str(out)]) == 0
    story = json.loads(out.read_text())
    assert story["slo"] == {"ttft_p99_ms": 1000.0, "itl_p99_ms": 50.0, "attainment_target": 0.99}
    base = story["baseline"]
    assert base["requests"] == story["run"]["requests"]
    assert base["source"].startswith("computed now")
    assert story["saved_gpu_hours"] == pytest.approx(base["gpu_hours"] - story["run"]["gpu_hours"])
    col = story["colocated"]
    assert col["requests"] == story["run"]["requests"]
    assert story["disagg_saved_gpu_hours"] == pytest.approx(col["gpu_hours"] - base["gpu_hours"])


def test_log_format_after_the_subcommand_gives_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """``pdscale demo --log-format json`` logs one JSON object per line on stderr."""
    assert main(["demo", "--duration", "30", *QUIET, "--no-baseline", "--log-format", "json"]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("{")]
    assert any(json.loads(ln)["event"] == "daemon_started" for ln in lines)


def test_summary_and_admin_hint_are_printed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal output names the real admin address, the SLO and the plot path."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--duration", "30", *QUIET[:4], "--speedup", "3000", "--no-baseline"]) == 0
    captured = capsys.readouterr()
    assert "pdscale admin --address 127.0.0.1:" in captured.err
    assert "127.0.0.1:0 status" not in captured.err
    assert "TTFT p99 <= 1000 ms and ITL p99 <= 50 ms" in captured.out
    assert f"plot written to {tmp_path / 'pdscale-demo.png'}" in captured.out


def test_compact_console_drops_unchanged_decisions() -> None:
    """A decision that changes nothing is left out of the compact console."""
    with pytest.raises(structlog.DropEvent):
        compact_console(None, "info", {"event": "scale_decision", "outcome": "unchanged", "pool": "decode"})


def test_compact_console_keeps_a_change_with_its_reason() -> None:
    """A changing decision keeps pool, old and new target and the reason, and nothing else."""
    event = {"event": "scale_decision", "outcome": "applied", "pool": "decode", "previous": 2, "target": 5,
             "reason": "need 5", "forecast": {"x": 1.0}, "guards": [], "level": "info"}  # fmt: skip
    kept = compact_console(None, "info", dict(event))
    assert set(kept) == {"event", "level", "pool", "previous", "target", "reason"}
