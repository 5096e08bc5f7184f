"""pdscale plan on tiny traces: the split search, colocated search, flags, report files, CLI errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog

from pdscale.controller.cli.main import main
from pdscale.controller.core.types import SLO
from pdscale.controller.lab.bench_run import RunSpec
from pdscale.controller.lab.planner import make_plan, search_static_split, short_prompt_share
from pdscale.simulator.traces import Trace

SPEC = RunSpec(model="llama-3.1-70b", tp=4, slo=SLO(ttft_ms=1000.0, itl_ms=50.0, quantile=0.99), forecaster="ewma")


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """The CLI configures structlog onto pytest's captured stderr; restore the defaults afterwards."""
    yield
    structlog.reset_defaults()


def _trace(n: int, span_s: float, isl: int, osl: int, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    arrival = np.sort(rng.uniform(0.0, span_s, n))
    inp = np.maximum(16, rng.normal(isl, isl / 4, n)).astype(np.int64)
    out = np.maximum(2, rng.normal(osl, osl / 4, n)).astype(np.int64)
    return Trace(arrival, inp, out, "tiny")


@pytest.fixture(scope="module")
def short_plan() -> object:
    """A light load of short prompts: a small fleet whose plan should be flagged."""
    return make_plan(_trace(400, 300.0, 200, 100), SPEC, gpu_hour_usd=2.0)


def test_split_meets_target_and_is_minimal() -> None:
    """The chosen split meets the target and removing a replica from either pool does not."""
    found = search_static_split(_trace(1500, 300.0, 1200, 200), SPEC, 0.99)
    assert found.met
    assert found.best.attainment >= 0.99
    by_sizes = {(e.sizes["prefill"], e.sizes["decode"]): e for e in found.evaluations}
    p, d = found.sizes["prefill"], found.sizes["decode"]
    for smaller in ((p - 1, d), (p, d - 1)):
        if smaller in by_sizes and min(smaller) >= 1:
            assert by_sizes[smaller].attainment < 0.99


def test_small_fleet_and_short_prompts_flagged(short_plan: object) -> None:
    """A fleet under 12 GPUs and mostly sub-512-token prompts are both flagged; disaggregation does not pay."""
    data = short_plan.to_json()  # type: ignore[attr-defined]
    codes = {f["code"] for f in data["flags"]}
    assert {"small_fleet", "short_prompts"} <= codes
    assert data["static_split"]["gpus"] < 12
    assert data["disaggregation_pays"] is False


def test_plan_reports_costs(short_plan: object) -> None:
    """The plan prices every option and the autoscaled replay ran."""
    s = short_plan.savings()  # type: ignore[attr-defined]
    assert s["static_disagg_usd"] == pytest.approx(2.0 * s["static_disagg_gpu_hours"])
    assert s["autoscaled_gpu_hours"] is not None
    assert s["colocated_gpu_hours"] > 0


def test_high_prefix_reuse_flagged() -> None:
    """A given prefix reuse of 50% or more is flagged."""
    plan = make_plan(_trace(200, 120.0, 2000, 100), SPEC, prefix_reuse=0.7, autoscale=False)
    assert "high_prefix_reuse" in {f.code for f in plan.flags}
    assert plan.autoscaled is None


def test_short_prompt_share() -> None:
    """The share counts prompts strictly under 512 tokens."""
    t = Trace(np.array([0.0, 1.0, 2.0, 3.0]), np.array([100, 511, 512, 4000]), np.array([5, 5, 5, 5]), "t")
    assert short_prompt_share(t) == 0.5


def test_cli_writes_report_and_json(tmp_path: Path) -> None:
    """`pdscale plan` writes report.md, its PNG plots and the JSON plan."""
    trace = tmp_path / "trace.csv"
    t = _trace(300, 240.0, 300, 80)
    rows = "\n".join(f"{a:.3f},{i},{o}" for a, i, o in zip(t.arrival_s, t.input_tokens, t.output_tokens, strict=True))
    trace.write_text("arrival_s,input_tokens,output_tokens\n" + rows + "\n", encoding="utf-8")
    out = tmp_path / "plan"
    code = main(
        [
            "plan",
            "--trace",
            str(trace),
            "--slo-ttft-ms",
            "1000",
            "--slo-itl-ms",
            "50",
            "--forecaster",
            "ewma",
            "--gpu-hour-usd",
            "3",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "plan.json"),
        ]
    )
    assert code == 0
    report = (out / "report.md").read_text()
    assert "static disaggregated" in report
    assert "small_fleet" in report
    for png in ("static_split.png", "colocated.png", "autoscaled.png", "cost.png"):
        assert (out / png).stat().st_size > 1000
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["static_split"]["met"] is True
    assert data["gpu_hour_usd"] == 3.0


def test_cli_bad_flag_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An out-of-range flag exits 2 naming it."""
    code = main(
        [
            "plan",
            "--trace",
            "bundled:azure-conv",
            "--slo-ttft-ms",
            "1000",
            "--slo-itl-ms",
            "50",
            "--prefix-reuse",
            "1.5",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "--prefix-reuse must be in [0, 1]" in capsys.readouterr().err


def test_cli_missing_trace_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing trace file exits 2 with the reader's message."""
    code = main(
        [
            *("plan", "--trace", str(tmp_path / "none.csv"), "--slo-ttft-ms", "1", "--slo-itl-ms", "1"),
            *("--out", str(tmp_path)),
        ]
    )
    assert code == 2
    assert "none.csv" in capsys.readouterr().err


def test_colocated_search_picks_a_chunk_that_meets() -> None:
    """The colocated search returns a fleet that meets the target and names its chunk size."""
    from pdscale.controller.lab.planner import COLOCATED_TOKEN_BUDGETS, search_colocated

    found = search_colocated(_trace(600, 120.0, 800, 120), SPEC, 0.99, probe=12)
    assert found.met
    assert found.token_budget in COLOCATED_TOKEN_BUDGETS
    assert found.best.attainment >= 0.99
    assert found.gpus == found.sizes["colocated"] * 4


def test_plan_stages_are_plain_lines_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal each planner stage is one "pdscale plan: <stage>" line on stderr, with no bar."""
    from pdscale.controller.cli.plan import _Stages

    with _Stages(2, quiet=False) as stages:
        stages("searching the static disaggregated split")
        stages("searching the colocated fleet")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "pdscale plan: searching the static disaggregated split",
        "pdscale plan: searching the colocated fleet",
    ]
