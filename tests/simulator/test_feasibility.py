"""Requests no fleet can serve within the SLO: flagged per request, reported apart, said in one line."""

from __future__ import annotations

import pytest

from pdscale.simulator import Cluster, ClusterConfig
from pdscale.simulator.feasibility import feasibility
from tests.simulator.cluster_fixtures import StandInPerf, StandInTrace, fixed_trace

PERF = StandInPerf()  # prefill 10 + 0.08 t + 1e-6 t^2 ms; decode step 15 + 0.1 b + 2e-5 ctx ms


def _mixed(*prompts: int, output: int = 10) -> StandInTrace:
    import numpy as np

    n = len(prompts)
    return StandInTrace(
        np.arange(n, dtype=np.float64), np.asarray(prompts, dtype=np.int64), np.full(n, output, dtype=np.int64)
    )


def test_prompt_whose_prefill_alone_misses_ttft_is_infeasible() -> None:
    """A 20k-token prompt prefills in 10 + 1,600 + 400 = 2,010 ms alone: no fleet meets a 1 s TTFT for it."""
    found = feasibility(PERF, _mixed(1000, 20_000), ttft_slo_ms=1000.0, itl_slo_ms=50.0)
    assert list(found.feasible) == [True, False]
    assert found.too_slow_prefill == 1


def test_output_that_misses_itl_at_batch_one_is_infeasible() -> None:
    """Decode at batch 1 with a 60k-token mean context takes 15.1 + 1.2 = 16.3 ms: over a 16 ms ITL target."""
    found = feasibility(PERF, _mixed(1000, 60_000, output=20), ttft_slo_ms=1e9, itl_slo_ms=16.0)
    assert list(found.feasible) == [True, False]
    assert found.too_slow_decode == 1


def test_request_past_the_context_window_is_infeasible() -> None:
    """A request longer than the context window is infeasible (the engine refuses it)."""
    found = feasibility(PERF, _mixed(1000, 5000), ttft_slo_ms=1e9, itl_slo_ms=1e9, max_model_len=4096)
    assert list(found.feasible) == [True, False]
    assert found.too_long == 1


def test_summary_says_the_share_up_front() -> None:
    """The operator's line names the target and the share of prompts no fleet can serve."""
    found = feasibility(PERF, _mixed(1000, 20_000, 30_000, 500), ttft_slo_ms=1000.0, itl_slo_ms=50.0)
    assert found.summary(1000.0, 50.0) == "TTFT 1 s cannot be met for 50.0% of these prompts (2 of 4) on any fleet"


def test_result_reports_attainment_over_all_and_over_feasible_requests() -> None:
    """Infeasible requests count as misses over all requests and are left out of the feasible attainment."""
    trace = fixed_trace([float(i) for i in range(20)], prompt=1000, output=10)
    long = fixed_trace([float(i) + 0.5 for i in range(5)], prompt=20_000, output=10)
    import numpy as np

    merged = StandInTrace(
        np.concatenate([trace.arrival_s, long.arrival_s]),
        np.concatenate([trace.input_tokens, long.input_tokens]),
        np.concatenate([trace.output_tokens, long.output_tokens]),
    )
    order = np.argsort(merged.arrival_s, kind="stable")
    merged = StandInTrace(merged.arrival_s[order], merged.input_tokens[order], merged.output_tokens[order])
    cfg = ClusterConfig(perf=PERF, prefill_replicas=4, decode_replicas=2, ttft_slo_ms=1000.0, itl_slo_ms=50.0)  # type: ignore[arg-type]
    result = Cluster(cfg, merged).finish()  # type: ignore[arg-type]
    # 20 short requests on an idle, ample fleet all meet the SLO; the 5 long ones cannot on any fleet.
    assert result.infeasible == 5
    assert result.slo_attainment_feasible == pytest.approx(1.0)
    assert result.slo_attainment == pytest.approx(20 / 25)
    assert result.to_json()["infeasible"] == 5
