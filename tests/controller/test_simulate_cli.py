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
TINY_SCENARIO = """\
name: tiny
model: llama-3.1-70b
tp: 4
traffic: {lengths: bundled:azure-conv, rate_curve: own, duration_s: 900, rate_scale: 0.5, seed: 3}
slo: {ttft_ms: 1000, itl_ms: 50, quantile: 0.99}
tick_s: 30
cold_start_s: 60
max_replicas: 8
forecaster: ewma
static: {prefill: 2, decode: 2}
"""
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


class TestSimulateConfig:
    def test_config_runs_the_policy(self, tmp_path: Path) -> None:
        """A settings file (--config) replays under its policy; the static policy's sizes are applied."""
        cfg = yaml.safe_load(EXAMPLE.read_text())
        cfg["policy"] = {"name": "static", "params": {"replicas": {"prefill": 3, "decode": 3}}}
        cfg["simulator"]["duration_s"] = 300
        cfg["simulator"]["trace"] = str(_small_trace(tmp_path, 300))
        cfg["state"] = {}
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = tmp_path / "r.json"
        assert main(["simulate", "--config", str(path), "--json", str(out)]) == 0
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


class TestSimulateScenario:
    def test_scenario_matches_its_bench_cell(self, tmp_path: Path) -> None:
        """--scenario takes a bench scenario file and gives the figures its bench cell gives (one meaning)."""
        from pdscale.controller.lab.bench import run_grid
        from pdscale.controller.lab.scenario import load_scenario

        path = tmp_path / "tiny.yaml"
        path.write_text(TINY_SCENARIO, encoding="utf-8")
        out = tmp_path / "r.json"
        assert main(["simulate", "--scenario", str(path), "--policy", "reactive", "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        ((_, cell),) = run_grid([load_scenario(path)], ["reactive"])
        assert data["scenario"] == "tiny"
        for key in ("requests", "completed", "gpu_hours", "slo_attainment", "scale_actions"):
            assert data[key] == cell.row[key], key

    def test_bundled_scenario_by_name(self, tmp_path: Path) -> None:
        """A bundled scenario is found by name, as ``pdscale bench --scenarios`` finds it."""
        out = tmp_path / "r.json"
        assert main(["simulate", "--scenario", "chat-hour", "--quick", "--policy", "static", "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        assert data["scenario"] == "chat-hour"
        assert data["requests"] > 0

    def test_settings_file_as_scenario_is_refused_with_a_hint(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A settings file passed to --scenario exits 2 and says to pass it with --config (not field noise)."""
        assert main(["simulate", "--scenario", str(EXAMPLE)]) == 2
        err = capsys.readouterr().err
        assert "pass it with --config" in err
        assert "unknown field" not in err

    def test_unknown_policy_is_refused(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unregistered --policy exits 2 naming the registered ones."""
        assert main(["simulate", "--scenario", "chat-hour", "--quick", "--policy", "magic"]) == 2
        assert "registered: slo" in capsys.readouterr().err


class TestSimulateFlags:
    def test_negative_replicas_name_the_flag(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--prefill -1 is refused by argparse naming the flag, not by an internal class."""
        with pytest.raises(SystemExit) as done:
            main(["simulate", "--trace", "bundled:azure-conv", "--prefill", "-1"])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert "--prefill" in err
        assert "ClusterConfig" not in err

    def test_a_pool_of_zero_warns(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """With no prefill replica nothing completes, and the run says so instead of exiting quietly."""
        assert main(["simulate", "--trace", str(_small_trace(tmp_path, 20)), "--prefill", "0"]) == 0
        assert "none of 20 requests completed" in capsys.readouterr().err


def test_summary_reads_with_units_and_says_where_the_plot_went(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The human summary names the SLO targets, gives latencies in ms, and prints the plot's path."""
    png = tmp_path / "p.png"
    assert main(["simulate", "--trace", str(_small_trace(tmp_path)), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "SLO attainment" in out
    assert "TTFT <= 1000 ms and mean ITL <= 50 ms" in out
    assert " ms / " in out
    assert f"plot written to  {png.resolve()}" in out


def test_quick_without_a_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--quick is a scenario's window: with --trace it would be accepted and ignored, so it is refused."""
    assert main(["simulate", "--trace", "bundled:azure-conv", "--quick"]) == 2
    assert "--quick applies to --scenario" in capsys.readouterr().err
