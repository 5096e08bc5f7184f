"""Replay: the control loop drives the simulator on a manual clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from pdscale.actuators.simulator import SimulatorActuator
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec
from pdscale.controller.policies.static import StaticPolicy
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.replay import load_settings_trace, replay
from pdscale.controller.runtime.settings import Settings, parse_settings
from pdscale.controller.sources.simulator import SimulatorMetricsSource
from pdscale.simulator import Cluster, ClusterConfig, Pool
from tests.simulator.cluster_fixtures import StandInPerf, poisson_trace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulator.yaml"


def test_static_policy_resizes_the_simulated_cluster() -> None:
    """A static policy's targets reach the cluster through the actuator and every request completes."""
    cluster = Cluster(
        ClusterConfig(perf=StandInPerf(), prefill_replicas=1, decode_replicas=1, cold_start_s=60.0),  # type: ignore[arg-type]
        poisson_trace(4, 600, seed=5),  # type: ignore[arg-type]
    )
    pools = {
        "prefill": PoolSpec("prefill", PoolRole.PREFILL, 4, 1, 4, cold_start_s=60.0),
        "decode": PoolSpec("decode", PoolRole.DECODE, 4, 1, 4, cold_start_s=60.0),
    }
    rec = Reconciler(
        pools=pools,
        source=SimulatorMetricsSource(pools, cluster=cluster),
        actuator=SimulatorActuator(pools, cluster=cluster),
        policy=StaticPolicy({"replicas": {"prefill": 2, "decode": 3}}),
        slo=SLO(ttft_ms=2000, itl_ms=100),
        tick_s=30.0,
    )
    result = replay(rec, cluster, tick_s=30.0)
    assert cluster.target(Pool.PREFILL) == 2
    assert cluster.target(Pool.DECODE) == 3
    assert result.completed == result.requests
    assert result.scale_actions >= 2


def _write_trace(path: Path, arrivals: list[float]) -> None:
    rows = "".join(f"{t},{100 + i},{10 + i}\n" for i, t in enumerate(arrivals))
    path.write_text("arrival_s,input_tokens,output_tokens\n" + rows)


def _trace_settings(trace: Path, rate_scale: float) -> Settings:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["simulator"] = {"trace": str(trace), "rate_scale": rate_scale}
    return parse_settings(data, "cfg.yaml")


def test_rate_scale_without_a_curve_multiplies_the_trace_rate(tmp_path: Path) -> None:
    """rate_scale 4 on a trace with no rate_curve gives 4x the arrivals per second over the same window."""
    trace = tmp_path / "t.csv"
    _write_trace(trace, [10.0 * i for i in range(101)])  # one request every 10 s over 1000 s
    base = load_settings_trace(_trace_settings(trace, 1.0))
    fast = load_settings_trace(_trace_settings(trace, 4.0))
    base_gaps = np.diff(base.arrival_s)
    fast_gaps = np.diff(fast.arrival_s)
    assert base_gaps.min() == base_gaps.max() == 10.0
    # One arrival every 2.5 s from 0 to 1000 s: 401 requests where the trace had 101, the window unchanged.
    assert fast_gaps == pytest.approx(np.full(400, 2.5))
    assert (float(fast.arrival_s[0]), float(fast.arrival_s[-1])) == (0.0, 1000.0)


def test_rate_scale_below_one_keeps_lengths_and_window(tmp_path: Path) -> None:
    """rate_scale 0.5 keeps the requests of the first half of the trace, spread over the whole window."""
    trace = tmp_path / "t.csv"
    _write_trace(trace, [10.0 * i for i in range(101)])
    slow = load_settings_trace(_trace_settings(trace, 0.5))
    assert len(slow) == 51  # arrivals 0..500 s, now 0..1000 s
    assert float(slow.arrival_s[-1]) == 1000.0
    assert np.diff(slow.arrival_s) == pytest.approx(np.full(50, 20.0))
    assert list(slow.input_tokens[:3]) == [100, 101, 102]
