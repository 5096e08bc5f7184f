"""policies.count_noise: a low-count prefill pool's rate pooled over the ticks that hold 100 arrivals."""

from __future__ import annotations

from pdscale.controller.core.capacity import ProfileCapacityModel
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import (
    SLO,
    DataState,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    Signals,
)
from pdscale.controller.policies.count_noise import pooled_rate
from pdscale.controller.policies.slo import SloPolicy
from tests.helpers.capacity_profiles import small_profile

SPECS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, 1, 1, 50, cold_start_s=270.0),
    "decode": PoolSpec("decode", PoolRole.DECODE, 1, 1, 50, cold_start_s=270.0),
}
NOW_S = 10_000.0
TICK_S = 30.0


def _ctx(rate: float, tokens_per_s: float | None = None, state: dict[str, object] | None = None) -> PolicyContext:
    prefill = Signals(arrival_rate_per_s=rate, prompt_arrival_tokens_per_s=tokens_per_s)
    decode = Signals(running_requests=4.0)
    sigs = {"prefill": prefill, "decode": decode}
    return PolicyContext(
        now_s=NOW_S,
        tick_s=TICK_S,
        pools=SPECS,
        states={n: PoolState(n, 2, 2) for n in SPECS},
        observations={n: PoolObservation(n, DataState.OK, sigs[n], NOW_S) for n in SPECS},
        forecasts={},
        slo=SLO(30_000.0, 50.0),
        capacity=ProfileCapacityModel(small_profile()),
        state=state or {},
    )


def _past(*rates: float) -> list[list[float]]:
    """History rows, oldest first, one tick apart and ending one tick before now."""
    n = len(rates)
    return [[NOW_S - (n - i) * TICK_S, r, r * 60_000.0] for i, r in enumerate(rates)]


def test_a_busy_tick_is_used_as_it_is() -> None:
    """4 req/s over 30 s is 120 arrivals: nothing pooled, the history restarts at this tick."""
    pooled, keep = pooled_rate(_ctx(4.0), "prefill", _past(3.0, 3.5))
    assert pooled is None
    assert keep == [[NOW_S, 4.0, -1.0]]


def test_low_counts_are_pooled_over_the_ticks_holding_100_arrivals() -> None:
    """0.4 req/s now (12 arrivals) after ticks of 0.3: pooled back until 100 arrivals are counted."""
    pooled, _ = pooled_rate(_ctx(0.4, 0.4 * 60_000.0), "prefill", _past(*[0.3] * 12))
    # 12 arrivals now, then 9 per earlier tick: 12 + 9 x 10 = 102 >= 100 after ten earlier ticks.
    assert pooled is not None
    assert pooled.ticks == 11
    assert abs(pooled.rate_per_s - (0.4 + 10 * 0.3) / 11) < 1e-12
    assert abs(pooled.events - 102.0) < 1e-9
    assert pooled.prefill_tps is not None
    assert abs(pooled.prefill_tps / pooled.rate_per_s - 60_000.0) < 1e-6


def test_a_step_beyond_three_sigma_restarts_the_pool() -> None:
    """Ticks of 0.3 req/s (9 arrivals) then 1.0 (30 arrivals, 7 sigma above): this tick is used alone."""
    pooled, keep = pooled_rate(_ctx(1.0), "prefill", _past(*[0.3] * 12))
    assert pooled is None
    assert keep == [[NOW_S, 1.0, -1.0]]


def test_rows_older_than_twenty_ticks_are_dropped() -> None:
    """History beyond 20 ticks is not pooled and not kept."""
    _, keep = pooled_rate(_ctx(0.3), "prefill", _past(*[0.3] * 30))
    assert len(keep) == 21
    assert min(r[0] for r in keep) >= NOW_S - 20 * TICK_S


def test_slo_sizes_a_low_count_pool_on_the_pooled_rate() -> None:
    """The prefill estimate's request rate is the pooled mean, and the reason says so."""
    state = {"counts": {"prefill": _past(*[0.3] * 12)}}
    prop = SloPolicy().decide(_ctx(0.4, 0.4 * 1000.0, state))
    assert abs(prop.estimates["prefill"]["demand_request_rate"] - (0.4 + 10 * 0.3) / 11) < 1e-9
    assert "pooled over 11 ticks" in prop.reasons["prefill"]


def test_pooling_off_sizes_on_this_tick() -> None:
    """With pool_low_counts false the estimate keeps this tick's 0.4 req/s."""
    state = {"counts": {"prefill": _past(*[0.3] * 12)}}
    prop = SloPolicy({"pool_low_counts": False}).decide(_ctx(0.4, 0.4 * 1000.0, state))
    assert abs(prop.estimates["prefill"]["demand_request_rate"] - 0.4) < 1e-9
