"""The demo's story: counting the run window only, exact latencies, the static baseline and the verdict."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pdscale.controller.lab.demo_plot import demo_figure
from pdscale.controller.lab.demo_story import Baseline, close_window, demo_story, window_latency
from pdscale.simulator import Cluster, ClusterConfig
from tests.simulator.cluster_fixtures import StandInPerf, poisson_trace

SLO = SimpleNamespace(ttft_ms=1000.0, itl_ms=50.0, quantile=0.99)
SETTINGS = SimpleNamespace(slo=SLO)


def _window(end_s: float = 120.0) -> Any:
    trace = poisson_trace(4, 600, seed=3)
    cluster = Cluster(ClusterConfig(perf=StandInPerf(), prefill_replicas=2, decode_replicas=2), trace)  # type: ignore[arg-type]
    return trace, close_window(cluster, end_s)


def _baseline(gpu_hours: float, met: bool = True) -> Baseline:
    summary = {"requests": 10, "completed": 10, "dropped": 0, "slo_attainment": 0.995, "gpu_hours": gpu_hours,
               "prefill_gpu_hours": gpu_hours / 2, "decode_gpu_hours": gpu_hours / 2}  # fmt: skip
    return Baseline(sizes={"prefill": 1, "decode": 1}, gpus=8, met=met, evaluations=3, wall_s=0.1, summary=summary)


def test_window_counts_only_requests_arrived_before_its_end() -> None:
    """close_window's result has exactly the requests whose arrival is <= the window end, all completed."""
    trace, window = _window(120.0)
    expected = int(np.count_nonzero(trace.arrival_s <= 120.0))
    assert expected < len(trace.arrival_s)
    assert (window.result.requests, window.result.completed, len(window.trace)) == (expected, expected, expected)


def test_window_latency_is_the_exact_p99_of_each_interval() -> None:
    """Each interval's ITL p99 equals numpy's quantile over the requests that finished in it."""
    _, window = _window(300.0)
    lat = window_latency(window.result, 300.0)
    res = window.result
    t_end = lat["t_min"][2] * 60.0
    done = (res.finish_s > t_end - 60.0) & (res.finish_s <= t_end) & ~np.isnan(res.itl_s)
    assert lat["itl_p99_ms"][2] == pytest.approx(float(np.quantile(res.itl_s[done], 0.99)) * 1000.0)
    assert max(lat["t_min"]) <= 5.0


def test_story_states_the_targets_and_what_autoscaling_saved() -> None:
    """The story carries the SLO targets and saved = baseline GPU-hours - run GPU-hours."""
    _, window = _window()
    run_h = window.result.to_json()["gpu_hours"]
    story = demo_story(SETTINGS, window, _baseline(run_h + 1.0))
    assert story["slo"] == {"ttft_p99_ms": 1000.0, "itl_p99_ms": 50.0, "attainment_target": 0.99}
    assert story["saved_gpu_hours"] == pytest.approx(1.0)
    assert story["verdict"].startswith("autoscaling saved 1.00 GPU-hours")


def test_verdict_says_when_autoscaling_cost_more() -> None:
    """A baseline cheaper than the run is reported as a cost, not a saving."""
    _, window = _window()
    run_h = window.result.to_json()["gpu_hours"]
    story = demo_story(SETTINGS, window, _baseline(run_h / 2))
    assert story["saved_gpu_hours"] < 0
    assert story["verdict"].startswith("autoscaling cost")


def test_skipped_baseline_says_why() -> None:
    """Without a baseline the story says why instead of inventing a saving."""
    _, window = _window()
    skipped = Baseline({}, 0, False, 0, 0.0, {}, skipped="--no-baseline")
    story = demo_story(SETTINGS, window, skipped)
    assert story["baseline"] == {"skipped": "--no-baseline"}
    assert "saved_gpu_hours" not in story


def test_plot_has_integer_replica_ticks_and_legends_outside_the_data() -> None:
    """The replicas axis ticks are whole numbers and every legend lies right of its axes."""
    series = [{"t": 30.0 * i, "prefill": {"target": 2 + i % 2, "ready": 2, "demand": 100.0},
               "decode": {"target": 3, "ready": 3, "demand": 7.0}} for i in range(6)]  # fmt: skip
    latency = {"t_min": [1.0, 2.0], "ttft_p99_ms": [400.0, 500.0], "itl_p99_ms": [30.0, float("nan")]}
    fig = demo_figure(series, {"prefill": "prefill", "decode": "decode"}, latency, SLO)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    replicas = fig.axes[0]
    ticks = [t for t in replicas.get_yticks() if replicas.get_ylim()[0] <= t <= replicas.get_ylim()[1]]
    assert all(float(t).is_integer() for t in ticks)
    for ax in fig.axes[:3]:
        legend = ax.get_legend()
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_colocated_baseline_gives_what_disaggregation_saved() -> None:
    """With a colocated baseline, disaggregation's saving is colocated GPU-hours minus the static split's."""
    _, window = _window()
    run_h = window.result.to_json()["gpu_hours"]
    col = Baseline(sizes={"colocated": 3}, gpus=12, met=True, evaluations=2, wall_s=0.1,
                   summary={**_baseline(run_h + 3.0).summary, "colocated_gpu_hours": run_h + 3.0})  # fmt: skip
    story = demo_story(SETTINGS, window, _baseline(run_h + 1.0), col)
    assert story["disagg_saved_gpu_hours"] == pytest.approx(2.0)
    assert "disaggregation saved 2.00 GPU-hours" in story["verdict"]
