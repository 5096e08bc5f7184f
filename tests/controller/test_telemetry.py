"""The daemon's own /metrics: catalog names and types, values from a tick, /healthz and /readyz."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signals
from pdscale.controller.policies.static import StaticPolicy
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.telemetry import METRIC_NAMES, Telemetry, TelemetryServer
from pdscale.testing import FakeActuator, ManualClock, StaticMetricsSource

CATALOG = Path(__file__).resolve().parents[2] / "deploy" / "metrics-catalog.yaml"
POOLS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, gpus_per_replica=4, min_replicas=1, max_replicas=8),
    "decode": PoolSpec("decode", PoolRole.DECODE, gpus_per_replica=4, min_replicas=1, max_replicas=8),
}
SIG = Signals(
    prompt_tokens_per_s=5000.0, request_rate_per_s=4.0, running_requests=50.0, ttft_p99_ms=300.0, itl_p99_ms=80.0
)


def _ticked() -> Telemetry:
    clock = ManualClock(1000.0)
    rec = Reconciler(
        pools=POOLS,
        source=StaticMetricsSource.ok({"prefill": SIG, "decode": SIG}),
        actuator=FakeActuator({"prefill": 2, "decode": 2}, clock=clock),
        policy=StaticPolicy({"replicas": {"prefill": 3}}),
        slo=SLO(1000, 50),
        tick_s=30.0,
        budget_gpus=64,
    )
    tel = Telemetry()
    tel.observe(rec.run_once(clock()), rec)
    return tel


def _families(tel: Telemetry) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(tel.render().decode())}


def test_names_and_types_match_catalog() -> None:
    """Every catalog metric is exported with its type and label names, and nothing else named pdscale_*."""
    catalog = yaml.safe_load(CATALOG.read_text())["daemon"]
    fams = _families(_ticked())
    for m in catalog:
        base = m["name"].removesuffix("_total") if m["type"] == "counter" else m["name"]
        assert base in fams, m["name"]
        fam = fams[base]
        assert fam.type == m["type"], m["name"]  # type: ignore[attr-defined]
        labels = {k for s in fam.samples for k in s.labels if k != "le"}  # type: ignore[attr-defined]
        assert labels <= set(m["labels"]), (m["name"], labels)
    assert {m["name"] for m in catalog} == set(METRIC_NAMES)


def test_values_from_a_tick() -> None:
    """Desired replicas, GPUs held, SLO attainment and the objective reflect the tick."""
    text = _ticked().render().decode()
    assert 'pdscale_desired_replicas{pool="prefill",role="prefill"} 3.0' in text
    assert "pdscale_gpus_allocated 16.0" in text
    assert 'pdscale_slo_attainment_ratio{pool="prefill"} 1.0' in text
    assert 'pdscale_slo_attainment_ratio{pool="decode"} 0.0' in text
    assert "pdscale_slo_ttft_seconds 1.0" in text


def test_decode_busy_share_and_kv_share_are_separate_metrics() -> None:
    """A compute-busy decode pool with little KV in use shows 0.8 busy and 0.03 KV, each under its own name."""
    busy = Signals(**{**SIG.as_dict(), "decode_utilization": 0.8, "kv_usage_ratio": 0.03})
    clock = ManualClock(1000.0)
    rec = Reconciler(
        pools=POOLS,
        source=StaticMetricsSource.ok({"prefill": SIG, "decode": busy}),
        actuator=FakeActuator({"prefill": 2, "decode": 2}, clock=clock),
        policy=StaticPolicy({}),
        slo=SLO(1000, 50),
        tick_s=30.0,
    )
    tel = Telemetry()
    tel.observe(rec.run_once(clock()), rec)
    text = tel.render().decode()
    assert 'pdscale_utilization_ratio{phase="decode",pool="decode"} 0.8' in text
    assert 'pdscale_kv_usage_ratio{pool="decode"} 0.03' in text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_endpoints_after_tick(path: str) -> None:
    """After a tick every endpoint answers 200."""
    server = TelemetryServer(_ticked(), "127.0.0.1:0").start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as resp:
            assert resp.status == 200
    finally:
        server.stop()


def test_not_ready_before_first_tick() -> None:
    """/readyz is 503 until a tick has completed."""
    server = TelemetryServer(Telemetry(), "127.0.0.1:0").start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
        assert info.value.code == 503
    finally:
        server.stop()
