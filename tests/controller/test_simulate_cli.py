"""`pdscale simulate`: JSON keys, plots, bad input, and scenarios driven by the control loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pdscale.controller.cli.main import main
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.controller.runtime.replay import ensure_cluster
from pdscale.controller.runtime.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "simulator.yaml"
KEYS = {
    "requests", "completed", "dropped", "slo_attainment", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms",
    "gpu_hours", "prefill_gpu_hours", "decode_gpu_hours", "scale_actions", "sim_wall_s",
}  # fmt: skip


def _small_trace(tmp_path: Path, n: int = 200) -> Path:
    rows = ["arrival_s,input_tokens,output_tokens"] + [f"{i * 0.5:.1f},{500 + i % 7 * 100},{50 + i % 5 * 20}"
                                                       for i in range(n)]  # fmt: skip
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


class TestSimulateTrace:
    def test_json_has_the_documented_keys(self, tmp_path: Path) -> None:
        """A static replay's JSON carries every documented key and loses no request."""
        out = tmp_path / "r.json"
        assert main(["simulate", "--trace", str(_small_trace(tmp_path)), "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert set(data) >= KEYS
        assert data["completed"] + data["dropped"] == data["requests"] == 200

    def test_colocated_mode(self, tmp_path: Path) -> None:
        """--mode colocated replays on one pool and reports no prefill/decode split."""
        out = tmp_path / "r.json"
        rc = main(["simulate", "--trace", str(_small_trace(tmp_path)), "--mode", "colocated", "--replicas", "2",
                   "--json", str(out)])  # fmt: skip
        assert rc == 0
        data = json.loads(out.read_text())
        assert data["mode"] == "colocated"
        assert data["completed"] == 200

    def test_plot_is_written(self, tmp_path: Path) -> None:
        """--plot writes a PNG."""
        png = tmp_path / "p.png"
        assert main(["simulate", "--trace", str(_small_trace(tmp_path)), "--plot", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"

    def test_malformed_trace_names_file_and_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed row is reported with file and line, exit code 2."""
        bad = tmp_path / "bad.csv"
        bad.write_text("arrival_s,input_tokens,output_tokens\n0.0,10,5\n1.0,abc,3\n")
        assert main(["simulate", "--trace", str(bad)]) == 2
        assert "bad.csv:3" in capsys.readouterr().err


class TestSimulateScenario:
    def test_scenario_runs_the_policy(self, tmp_path: Path) -> None:
        """A settings file replays under its policy; the static policy's sizes are applied."""
        cfg = yaml.safe_load(EXAMPLE.read_text())
        cfg["policy"] = {"name": "static", "params": {"replicas": {"prefill": 3, "decode": 3}}}
        cfg["simulator"]["duration_s"] = 300
        cfg["simulator"]["trace"] = str(_small_trace(tmp_path, 300))
        cfg["state"] = {}
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = tmp_path / "r.json"
        assert main(["simulate", "--scenario", str(path), "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert data["scale_actions"] >= 2
        assert data["completed"] == 300

    def test_ensure_cluster_is_shared(self) -> None:
        """The embedded cluster is built once per environment and shared by actuator and source."""
        settings = load_settings(EXAMPLE)
        env = PluginEnv()
        first = ensure_cluster(settings, env)
        assert ensure_cluster(settings, env) is first
        assert env.resources["simulator"] is first
