"""pdscale bench on a tiny scenario: the grid, the oracle ratio, the CLI's table, JSON, Markdown and plots."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from pdscale.controller.cli.main import main
from pdscale.controller.lab.bench import BenchError, parse_policies, run_grid
from pdscale.controller.lab.scenario import load_scenario

TINY = """\
name: tiny
traffic: {lengths: bundled:azure-conv, rate_curve: own, duration_s: 240, rate_scale: 0.5, seed: 1}
slo: {ttft_ms: 1000, itl_ms: 50}
forecaster: ewma
static: {prefill: 2, decode: 2}
"""


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """The CLI configures structlog onto pytest's captured stderr; restore the defaults afterwards."""
    yield
    structlog.reset_defaults()


ROW_KEYS = {
    "scenario",
    "policy",
    "gpu_hours",
    "x_oracle",
    "slo_attainment",
    "ttft_p99_ms",
    "itl_p99_ms",
    "scale_actions",
    "wall_s",
    "peak_gpus",
}


@pytest.fixture
def scenario_dir(tmp_path: Path) -> Path:
    """A directory holding the tiny scenario."""
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    return tmp_path


def test_grid_rows_have_table_keys(scenario_dir: Path) -> None:
    """Two policies on a tiny scenario give two rows with every table column; the oracle's ratio is 1."""
    results = run_grid([load_scenario(scenario_dir / "tiny.yaml")], ["oracle", "static"])
    rows = {req.policy: out.row for req, out in results}
    assert set(rows) == {"oracle", "static"}
    for row in rows.values():
        assert set(row) >= ROW_KEYS
        assert row["requests"] > 0
    assert rows["oracle"]["x_oracle"] == pytest.approx(1.0)
    assert rows["static"]["initial"] == {"prefill": 2, "decode": 2}
    assert rows["static"]["scale_actions"] == 0


def test_grid_without_oracle_has_no_ratio(scenario_dir: Path) -> None:
    """Without an oracle run, x_oracle is None rather than a made-up number."""
    results = run_grid([load_scenario(scenario_dir / "tiny.yaml")], ["static"])
    assert results[0][1].row["x_oracle"] is None


def test_parse_policies() -> None:
    """ "all" expands to every registered policy and the hindsight yardstick; unknown names list the registered."""
    assert parse_policies("all") == ["slo", "static", "reactive", "dynamo-like", "keda", "oracle", "hindsight"]
    with pytest.raises(BenchError, match="registered: slo"):
        parse_policies("slo,magic")


def test_cli_writes_json_markdown_and_plots(scenario_dir: Path, tmp_path: Path) -> None:
    """`pdscale bench` writes the rows, timelines, a Markdown table and PNG plots."""
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--scenario-dir",
            str(scenario_dir),
            "--scenarios",
            "tiny",
            "--policies",
            "slo,oracle",
            "--json",
            str(tmp_path / "bench.json"),
            "--markdown",
            str(tmp_path / "bench.md"),
            "--plot",
            str(out),
        ]
    )
    assert code == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert [r["policy"] for r in doc["rows"]] == ["slo", "oracle"]
    assert set(doc["timelines"]) == {"tiny/slo", "tiny/oracle"}
    assert {"prefill", "decode"} == set(doc["timelines"]["tiny/slo"]["busy_share"])
    table = (tmp_path / "bench.md").read_text()
    assert "| tiny | slo |" in table
    assert "x oracle" in table
    assert {p.name for p in out.glob("*.png")} == {"bench_summary.png", "tiny_slo.png", "tiny_oracle.png"}


def test_cli_unknown_scenario_exit_2(scenario_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown scenario exits 2 with a message naming it."""
    assert main(["bench", "--scenario-dir", str(scenario_dir), "--scenarios", "nope"]) == 2
    assert "unknown scenario 'nope'" in capsys.readouterr().err


def test_missing_ray_is_a_clear_error(scenario_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--parallel without Ray installed says how to install it."""
    import builtins

    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(BenchError, match=r"pdscale\[ray\]"):
        run_grid([load_scenario(scenario_dir / "tiny.yaml")], ["static"], parallel=True)


def test_markdown_replaces_between_markers(tmp_path: Path) -> None:
    """Regenerating a document keeps the text around the bench markers and replaces the table."""
    from pdscale.controller.lab.report import BENCH_BEGIN, BENCH_END, write_bench_markdown

    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n{BENCH_BEGIN}\nold table\n{BENCH_END}\nfooter\n", encoding="utf-8")
    row = {
        "scenario": "s",
        "policy": "slo",
        "gpu_hours": 1.0,
        "x_oracle": 1.2,
        "x_hindsight": 1.1,
        "slo_attainment": 0.95,
    }
    write_bench_markdown([row], doc)
    text = doc.read_text()
    assert text.startswith("# Title\n")
    assert text.endswith("footer\n")
    assert "old table" not in text
    assert "| s | slo | 1.0 | 1.20 | 1.10 | **95.00%** ! |" in text


def test_static_without_split_is_planned(tmp_path: Path) -> None:
    """A scenario with no recorded split gets the planner's split for its static run."""
    (tmp_path / "plain.yaml").write_text(TINY.replace("static: {prefill: 2, decode: 2}\n", ""), encoding="utf-8")
    results = run_grid([load_scenario(tmp_path / "plain.yaml")], ["static"])
    row = results[0][1].row
    assert set(row["initial"]) == {"prefill", "decode"}
    assert row["slo_attainment"] >= 0.99


def test_failing_run_is_reported_not_fatal(scenario_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that raises becomes a row with its error; the other runs still complete."""
    from pdscale.controller.lab import bench

    real = bench.run_request

    def flaky(req: bench.RunRequest) -> object:
        if req.policy == "oracle":
            raise RuntimeError("simulated failure")
        return real(req)

    monkeypatch.setattr(bench, "run_request", flaky)
    results = run_grid([load_scenario(scenario_dir / "tiny.yaml")], ["static", "oracle"])
    rows = {req.policy: out.row for req, out in results}
    assert rows["oracle"]["error"] == "RuntimeError: simulated failure"
    assert rows["static"]["slo_attainment"] is not None
    assert rows["static"]["x_oracle"] is None


def test_budget_never_exceeded(tmp_path: Path) -> None:
    """Under budget_gpus the pools together never hold more GPUs, whatever the load asks for."""
    text = TINY.replace("rate_scale: 0.5", "rate_scale: 3.0").replace("static: {prefill: 2, decode: 2}\n", "")
    (tmp_path / "tight.yaml").write_text(text + "budget_gpus: 16\n", encoding="utf-8")
    results = run_grid([load_scenario(tmp_path / "tight.yaml")], ["slo"])
    row = results[0][1].row
    assert 0 < row["peak_gpus"] <= 16


def test_forecast_free_policies_are_told_by_the_policy_class() -> None:
    """The policies that read no forecast (static, reactive, dynamo-like with its own predictor, oracle) say so."""
    from pdscale.controller.lab.bench_run import uses_forecasts

    assert {p: uses_forecasts(p) for p in ("slo", "dynamo-like", "static", "reactive", "oracle")} == {
        "slo": True,
        "dynamo-like": False,
        "static": False,
        "reactive": False,
        "oracle": False,
    }


def test_hindsight_keeps_the_cold_start_and_guards_the_oracle_drops() -> None:
    """hindsight runs with the scenario's cold start and default guards; oracle with neither."""
    from pdscale.controller.core.types import SLO
    from pdscale.controller.lab.bench_run import RunSpec, _settings

    spec = RunSpec(model="llama-3.1-70b", tp=4, slo=SLO(ttft_ms=1000, itl_ms=50), cold_start_s=240.0)
    initial = {"prefill": 2, "decode": 3}
    hindsight, oracle = _settings(spec, "hindsight", initial), _settings(spec, "oracle", initial)
    assert {p.cold_start_s for p in hindsight.pools} == {240.0}
    assert {p.cold_start_s for p in oracle.pools} == {0.0}
    assert hindsight.guards.max_step_up == _settings(spec, "slo", initial).guards.max_step_up
    assert oracle.guards.max_step_up == 1000


def test_grid_reports_x_hindsight(scenario_dir: Path) -> None:
    """Each row carries its GPU-hours over the hindsight run's; the hindsight row's own ratio is 1."""
    results = run_grid([load_scenario(scenario_dir / "tiny.yaml")], ["hindsight", "static"])
    rows = {req.policy: out.row for req, out in results}
    assert rows["hindsight"]["x_hindsight"] == pytest.approx(1.0)
    assert "error" not in rows["hindsight"]
    expected = rows["static"]["gpu_hours"] / rows["hindsight"]["gpu_hours"]
    assert rows["static"]["x_hindsight"] == pytest.approx(expected)


def test_grid_reports_progress_done_over_total(scenario_dir: Path) -> None:
    """on_progress hears (0, 2) before the runs, then (1, 2) and (2, 2) as two runs finish."""
    seen: list[tuple[int, int]] = []
    run_grid(
        [load_scenario(scenario_dir / "tiny.yaml")], ["static", "oracle"], on_progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(0, 2), (1, 2), (2, 2)]


def test_cli_progress_is_quiet_off_a_terminal(scenario_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With stderr captured (not a TTY), bench prints its per-run line and no progress bar or ETA."""
    assert main(["bench", "--scenario-dir", str(scenario_dir), "--scenarios", "tiny", "--policies", "static"]) == 0
    err = capsys.readouterr().err
    assert "tiny static" in " ".join(err.split())
    assert "ETA" not in err
    assert "━" not in err
    assert "\r" not in err
