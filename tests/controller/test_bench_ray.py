"""pdscale bench --parallel: the grid fans out over a real local Ray instance."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdscale.controller.lab.bench import run_grid
from pdscale.controller.lab.scenario import load_scenario

pytestmark = pytest.mark.integration_ray

TINY = """\
name: tiny
traffic: {lengths: bundled:azure-conv, rate_curve: own, duration_s: 180, rate_scale: 0.5, seed: 2}
forecaster: ewma
static: {prefill: 2, decode: 2}
"""


@pytest.fixture
def local_ray() -> Iterator[None]:
    """A local Ray instance with two CPUs, shut down afterwards."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    repo = str(Path(__file__).resolve().parents[2])
    # address="local": a fresh instance even when another test session left a Ray head running.
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": repo}})
    yield
    ray.shutdown()


def test_parallel_matches_sequential(local_ray: None, tmp_path: Path) -> None:
    """Runs on Ray workers give the same simulated results as sequential runs."""
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    sc = load_scenario(tmp_path / "tiny.yaml")
    par = run_grid([sc], ["static", "oracle"], parallel=True)
    seq = run_grid([sc], ["static", "oracle"])
    for (_, a), (_, b) in zip(par, seq, strict=True):
        assert a.row["policy"] == b.row["policy"]
        assert a.row["gpu_hours"] == pytest.approx(b.row["gpu_hours"])
        assert a.row["slo_attainment"] == pytest.approx(b.row["slo_attainment"])
    assert par[1][1].row["x_oracle"] == pytest.approx(1.0)
