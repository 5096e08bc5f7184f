"""``keda``: llm-d's per-role KEDA recipe (prefill on queued prompt tokens, decode on KV occupancy), HPA rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pdscale.controller.core.capacity import ProfileCapacityModel
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import SLO, DataState, PoolObservation, PoolRole, PoolSpec, PoolState, Signals
from pdscale.controller.policies.keda import KedaPolicy
from tests.helpers.capacity_profiles import small_profile

SPECS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, 1, 1, 50),
    "decode": PoolSpec("decode", PoolRole.DECODE, 1, 1, 50),
}
TPS = 5000.0  # prefill tokens/s per replica (param): target = 5000 x 2 s = 10,000 queued tokens per replica


def ctx(
    *, waiting: float = 0.0, kv: float = 0.5, ready: int = 2, state: dict[str, Any] | None = None, now: float = 0.0
) -> PolicyContext:
    prefill = Signals(waiting_requests=waiting, isl_mean_tokens=2048.0, running_requests=1.0)
    decode = Signals(kv_usage_ratio=kv, running_requests=10.0, waiting_requests=0.0)
    obs = {
        "prefill": PoolObservation("prefill", DataState.OK, prefill, sample_time_s=now),
        "decode": PoolObservation("decode", DataState.OK, decode, sample_time_s=now),
    }
    return PolicyContext(
        now_s=now,
        tick_s=30.0,
        pools=SPECS,
        states={n: PoolState(n, ready, ready) for n in SPECS},
        observations=obs,
        forecasts={},
        slo=SLO(1000.0, 50.0),
        capacity=ProfileCapacityModel(small_profile()),
        state=state or {},
    )


def test_prefill_replicas_are_queued_tokens_over_the_per_replica_target() -> None:
    """10 queued 2,048-token prompts on one replica against 10,000 tokens each: ceil(20,480 / 10,000) = 3."""
    out = KedaPolicy({"prefill_tps_per_replica": TPS}).decide(ctx(waiting=10.0, ready=1))
    assert out.targets["prefill"] == 3


def test_prefill_within_tolerance_holds() -> None:
    """A metric within 10% of target x ready leaves the pool alone (HPA tolerance)."""
    waiting = 2 * 10_000.0 * 1.05 / 2048.0  # 5% over what two replicas should hold
    out = KedaPolicy({"prefill_tps_per_replica": TPS}).decide(ctx(waiting=waiting))
    assert out.targets["prefill"] == 2
    assert "within tolerance" in out.reasons["prefill"]


def test_decode_scales_on_kv_occupancy() -> None:
    """KV at 0.9 against a 0.7 threshold on 4 replicas: ceil(4 x 0.9 / 0.7) = 6."""
    out = KedaPolicy({"kv_threshold": 0.7}).decide(ctx(kv=0.9, ready=4))
    assert out.targets["decode"] == math.ceil(4 * 0.9 / 0.7)


def test_scale_down_waits_for_the_stabilisation_window() -> None:
    """After wanting 6 decode replicas, a low reading 100 s later keeps 6; 301 s later it may go down."""
    policy = KedaPolicy({"kv_threshold": 0.7})
    first = policy.decide(ctx(kv=0.9, ready=4, now=0.0))
    held = policy.decide(ctx(kv=0.2, ready=6, now=100.0, state=dict(first.state)))
    later = policy.decide(ctx(kv=0.2, ready=6, now=401.0, state=dict(held.state)))
    assert held.targets["decode"] == 6
    assert later.targets["decode"] == math.ceil(6 * 0.2 / 0.7)


def test_prefill_target_is_calibrated_from_the_capacity_model() -> None:
    """Without the parameter, a replica's prefill tokens/s comes from the same capacity model slo gets."""
    c = ctx(waiting=40.0)
    assert c.capacity is not None
    target = c.capacity.prefill_throughput_tps(2048.0) * 2.0
    out = KedaPolicy().decide(c)
    assert out.targets["prefill"] == math.ceil(40.0 * 2048.0 / target - 1e-9)


def test_unknown_parameter_is_named() -> None:
    """A misspelt parameter is refused by name."""
    with pytest.raises(ValueError, match="kv_treshold"):
        KedaPolicy({"kv_treshold": 0.5})


def test_kv_threshold_is_calibrated_to_the_itl_bound_batch() -> None:
    """Without the parameter the decode threshold is one replica's KV share at the largest batch meeting ITL."""
    from pdscale.controller.core.capacity import Workload

    c = ctx(kv=0.9, ready=4)
    assert c.capacity is not None
    w = Workload(isl_mean_tokens=2048.0, osl_mean_tokens=256.0)  # ISL observed on prefill, default OSL
    share = c.capacity.decode_batch(50.0, w) * (2048.0 + 128.0) / c.capacity.profile.max_kv_tokens
    expected = min(0.95, max(0.01, share))
    out = KedaPolicy().decide(c)
    assert f"vs {expected:.2f}" in out.reasons["decode"]
