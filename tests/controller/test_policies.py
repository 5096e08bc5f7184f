"""Built-in policies: parameter validation, sizing decisions, windows in seconds, budget split, baselines."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pdscale.controller.core.capacity import ProfileCapacityModel, Workload
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import (
    SLO,
    DataState,
    Forecast,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    Signal,
    Signals,
)
from pdscale.controller.lab.oracle_demand import build_oracle_demand
from pdscale.controller.policies.demand import split_budget
from pdscale.controller.policies.dynamo_like import DynamoLikePolicy, arima_next
from pdscale.controller.policies.oracle import OraclePolicy
from pdscale.controller.policies.reactive import ReactivePolicy
from pdscale.controller.policies.slo import SloPolicy
from pdscale.controller.runtime.plugins import PluginGroup, Registry
from tests.helpers.capacity_profiles import small_profile

MODEL = ProfileCapacityModel(small_profile())
SPECS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, 1, 1, 50, cold_start_s=60.0),
    "decode": PoolSpec("decode", PoolRole.DECODE, 1, 1, 50, cold_start_s=60.0),
}


def fc(v: float) -> Forecast:
    return Forecast(mean=v, quantiles={0.5: v, 0.9: v * 1.2, 0.99: v * 1.5})


def ctx(
    *,
    now: float = 1000.0,
    rate: float = 10.0,
    conc: float = 100.0,
    targets: dict[str, int] | None = None,
    state: dict[str, Any] | None = None,
    budget: int | None = None,
    flips: bool = False,
    capacity: ProfileCapacityModel | None = MODEL,
    data: DataState = DataState.OK,
    extra: dict[str, float] | None = None,
    slo_ttft_ms: float = 1000.0,
) -> PolicyContext:
    targets = targets or {"prefill": 2, "decode": 2}
    sig = Signals(
        request_rate_per_s=rate,
        prompt_tokens_per_s=rate * 1000.0,
        running_requests=conc,
        waiting_requests=0.0,
        isl_mean_tokens=1000.0,
        osl_mean_tokens=200.0,
        **(extra or {}),
    )
    obs = {n: PoolObservation(n, data, sig if data is DataState.OK else Signals(), sample_time_s=now) for n in SPECS}
    return PolicyContext(
        now_s=now,
        tick_s=30.0,
        pools=SPECS,
        states={n: PoolState(n, t, t) for n, t in targets.items()},
        observations=obs,
        forecasts={
            "prefill": {Signal.PREFILL_TPS: fc(rate * 1000.0), Signal.REQUEST_RATE: fc(rate)},
            "decode": {Signal.DECODE_CONCURRENCY: fc(conc), Signal.REQUEST_RATE: fc(rate)},
        },
        slo=SLO(slo_ttft_ms, 50.0),
        budget_gpus=budget,
        capacity=capacity,
        supports_role_flip=flips,
        state=state or {},
    )


class TestParams:
    @pytest.mark.parametrize("factory", [SloPolicy, ReactivePolicy, DynamoLikePolicy])
    def test_unknown_parameter_named(self, factory: Any) -> None:
        """An unknown parameter is rejected by name."""
        with pytest.raises(ValueError, match="bogus"):
            factory({"bogus": 1})

    @pytest.mark.parametrize(
        ("factory", "name", "value"),
        [
            (SloPolicy, "decode_forecast_quantile", 1.5),
            (SloPolicy, "calibrate", "yes"),
            (ReactivePolicy, "target_utilization", 0.0),
            (ReactivePolicy, "scale_down_window_s", "long"),
            (DynamoLikePolicy, "adjustment_interval_s", -1.0),
        ],
    )
    def test_bad_value_named(self, factory: Any, name: str, value: Any) -> None:
        """An ill-typed or out-of-range parameter is rejected naming it."""
        with pytest.raises(ValueError, match=name):
            factory({name: value})

    def test_oracle_needs_demand(self) -> None:
        """The oracle refuses to start without a demand object."""
        with pytest.raises(ValueError, match="demand"):
            OraclePolicy({})

    @pytest.mark.parametrize("name", ["slo", "reactive", "dynamo-like", "keda", "static"])
    def test_registered_as_entry_points(self, name: str) -> None:
        """Every built-in policy loads through the plugin registry."""
        policy = Registry().create(PluginGroup.POLICIES, name, {})
        assert policy.name == name


class TestSlo:
    def test_holds_without_capacity_model(self) -> None:
        """No capacity model: every pool holds and the reason says why."""
        p = SloPolicy().decide(ctx(capacity=None))
        assert p.targets == {"prefill": 2, "decode": 2}
        assert "capacity" in p.reasons["prefill"]

    def test_scales_up_for_forecast(self) -> None:
        """A forecast beyond current capacity raises targets at once."""
        p = SloPolicy().decide(ctx(rate=60.0, conc=600.0))
        assert p.targets["prefill"] > 2
        assert p.targets["decode"] > 2
        assert "need" in p.reasons["decode"]

    def test_decode_sized_at_its_quantile(self) -> None:
        """The decode pool is sized for its forecast quantile (p90 = 1.2 x mean here)."""
        p = SloPolicy({"decode_forecast_quantile": 0.9}).decide(ctx(conc=600.0))
        b = MODEL.decode_batch(50.0, Workload(1000.0, 200.0))
        assert p.targets["decode"] == math.ceil(720.0 / b)

    def test_estimate_names_the_quantile_the_reason_names(self) -> None:
        """Each pool's estimate carries the forecast quantile its reason cites (p50 prefill, p90 decode)."""
        p = SloPolicy({"prefill_forecast_quantile": 0.5, "decode_forecast_quantile": 0.9}).decide(ctx(conc=600.0))
        assert p.estimates["prefill"]["forecast_quantile"] == 0.5
        assert "at forecast p50:" in p.reasons["prefill"]
        assert p.estimates["decode"]["forecast_quantile"] == 0.9
        assert "at forecast p90:" in p.reasons["decode"]

    def test_scale_down_waits_for_sustained_window(self) -> None:
        """A lower need is acted on only after it held for scale_down_window_s seconds."""
        policy = SloPolicy({"scale_down_window_s": 300.0})
        state: dict[str, Any] = {}
        targets = {"prefill": 10, "decode": 10}
        seen = []
        for k in range(12):
            p = policy.decide(ctx(now=1000.0 + 30.0 * k, rate=1.0, conc=10.0, targets=targets, state=state))
            state = dict(p.state)
            seen.append(p.targets["decode"])
        assert seen[0] == 10
        assert seen[9] == 10
        assert seen[11] < 10

    def test_budget_split_maximises_worst_share(self) -> None:
        """Under a binding budget the pools get shares of their needs as equal as possible."""
        p = SloPolicy().decide(ctx(rate=100.0, conc=2000.0, budget=10))
        assert sum(p.targets.values()) == 10
        assert "budget" in p.reasons["decode"]

    def test_flips_move_capacity(self) -> None:
        """With role flips available, a shrinking pool's replicas move to the growing one."""
        p = SloPolicy({"scale_down_window_s": 0.0}).decide(
            ctx(rate=1.0, conc=1000.0, targets={"prefill": 6, "decode": 2}, flips=True)
        )
        assert p.flips
        assert p.flips[0].from_pool == "prefill"
        assert p.flips[0].to_pool == "decode"

    def test_holds_pool_without_any_data(self) -> None:
        """A pool with neither forecast nor metrics keeps its target."""
        c = ctx(data=DataState.MISSING)
        c = PolicyContext(**{**{f: getattr(c, f) for f in c.__dataclass_fields__}, "forecasts": {}})
        p = SloPolicy().decide(c)
        assert p.targets == {"prefill": 2, "decode": 2}

    def test_calibration_raises_factor_when_slower(self) -> None:
        """A mean ITL above the profile's step time at the observed mean batch raises the decode factor."""
        policy = SloPolicy({"calibration_alpha": 1.0})
        w = Workload(1000.0, 200.0)
        batch = 50.0  # per replica; 2 ready decode replicas
        itl = MODEL.predict_itl_ms(1, batch, w) * 1.5
        gen_tps = 2 * batch / (itl / 1e3)  # Little's law: tokens/s x mean ITL = mean running sequences
        p = policy.decide(ctx(extra={"itl_mean_ms": itl, "generation_tokens_per_s": gen_tps, "itl_p99_ms": 40.0}))
        assert p.state["calibration"]["decode"] == pytest.approx(1.5)
        assert p.estimates["decode"]["profile_off"] == 1.0

    def test_calibration_ignores_bucket_quantiles(self) -> None:
        """Without exact means, interpolated ITL quantiles leave the decode factor alone."""
        p = SloPolicy({"calibration_alpha": 1.0}).decide(ctx(extra={"itl_p50_ms": 10.0, "itl_p99_ms": 40.0}))
        assert p.state["calibration"]["decode"] == 1.0

    def test_prefill_calibration_from_busy_share(self) -> None:
        """A prefill pool busier than the profile predicts at the observed rate raises the prefill factor."""
        w = Workload(1000.0, 200.0)
        demand = {Signal.REQUEST_RATE: 10.0}
        predicted = MODEL.predict_prefill_busy_share(2, demand, w)
        assert 0.05 < predicted * 1.25 < 0.95
        p = SloPolicy({"calibration_alpha": 1.0}).decide(ctx(extra={"prefill_utilization": predicted * 1.25}))
        assert p.state["calibration"]["prefill"] == pytest.approx(1.25)

    def test_saturated_busy_share_not_a_ratio(self) -> None:
        """A pool busy all the time says only that it is overloaded: the prefill factor is not fitted to it."""
        p = SloPolicy({"calibration_alpha": 1.0}).decide(ctx(extra={"prefill_utilization": 1.0}))
        assert p.state["calibration"]["prefill"] == 1.0

    def test_proposal_counts_starting_replicas(self) -> None:
        """The slo policy sizes from demand, so its proposals count starting replicas as capacity."""
        assert SloPolicy().decide(ctx()).counts_starting


class TestSloMeasuredInputs:
    @staticmethod
    def _run(rates: list[float], params: dict[str, Any] | None = None) -> Any:
        policy = SloPolicy(params)
        state: dict[str, Any] = {}
        p = None
        for i, r in enumerate(rates):
            p = policy.decide(ctx(now=1000.0 + 30.0 * i, rate=r, state=state))
            state = dict(p.state)
        return p

    def test_bursty_arrivals_raise_prefill_need(self) -> None:
        """Tick counts far more dispersed than Poisson become the queueing model's ca^2 and more prefill."""
        rng = np.random.default_rng(0)
        steady = self._run([float(rng.poisson(300)) / 30.0 for _ in range(40)])
        bursty = self._run([float(rng.poisson(300 * rng.gamma(4.0, 0.25))) / 30.0 for _ in range(40)])
        assert steady.estimates["prefill"]["arrival_cv2"] < 2.0
        assert bursty.estimates["prefill"]["arrival_cv2"] > 10.0
        assert bursty.targets["prefill"] > steady.targets["prefill"]

    def test_measurement_can_be_turned_off(self) -> None:
        """measure_arrival_cv2=false keeps the configured ca^2."""
        p = self._run([10.0, 20.0] * 20, {"measure_arrival_cv2": False})
        assert "arrival_cv2" not in p.estimates["prefill"]

    def test_slo_feedback_steps_margin_up_on_a_miss(self) -> None:
        """With slo_feedback on, a prefill p99 over target raises that pool's margin and need."""
        policy = SloPolicy({"slo_feedback": True, "measure_arrival_cv2": False})
        calm = policy.decide(ctx(extra={"ttft_p99_ms": 500.0}))
        missed = policy.decide(ctx(extra={"ttft_p99_ms": 2500.0}))
        assert calm.estimates["prefill"]["slo_margin"] == 1.0
        assert missed.estimates["prefill"]["slo_margin"] == pytest.approx(1.15)
        assert missed.estimates["prefill"]["demand_request_rate"] > calm.estimates["prefill"]["demand_request_rate"]

    def test_slo_feedback_off_by_default(self) -> None:
        """The default policy does not add a margin after a miss."""
        p = SloPolicy().decide(ctx(extra={"ttft_p99_ms": 2500.0}))
        assert p.estimates["prefill"]["slo_margin"] == 1.0


class TestReactive:
    def test_hpa_formula(self) -> None:
        """desired = ceil(ready x utilisation / target)."""
        p = ReactivePolicy({"target_utilization": 0.5}).decide(ctx(extra={"prefill_utilization": 0.9}))
        assert p.targets["prefill"] == math.ceil(2 * 0.9 / 0.5)

    def test_decode_scales_on_its_busy_share_not_the_kv_share(self) -> None:
        """A decode pool 90% compute-busy with its KV 5% full scales up: the KV share is not utilisation."""
        extra = {"decode_utilization": 0.9, "kv_usage_ratio": 0.05}
        p = ReactivePolicy({"target_utilization": 0.5}).decide(ctx(extra=extra))
        assert p.targets["decode"] == math.ceil(2 * 0.9 / 0.5)

    def test_tolerance_band_holds(self) -> None:
        """Within 10% of the target the pool holds."""
        p = ReactivePolicy({"target_utilization": 0.5}).decide(ctx(extra={"prefill_utilization": 0.54}))
        assert p.targets["prefill"] == 2

    def test_scale_down_window_in_seconds(self) -> None:
        """A low reading scales down only to the highest desired count of the window."""
        policy = ReactivePolicy({"target_utilization": 0.5, "scale_down_window_s": 120.0})
        hi = policy.decide(ctx(now=1000.0, targets={"prefill": 4, "decode": 2}, extra={"prefill_utilization": 0.5}))
        lo = policy.decide(
            ctx(
                now=1060.0,
                targets={"prefill": 4, "decode": 2},
                state=dict(hi.state),
                extra={"prefill_utilization": 0.1},
            )
        )
        assert lo.targets["prefill"] == 4
        later = policy.decide(
            ctx(
                now=1200.0,
                targets={"prefill": 4, "decode": 2},
                state=dict(lo.state),
                extra={"prefill_utilization": 0.1},
            )
        )
        assert later.targets["prefill"] == 1

    def test_missing_metrics_hold(self) -> None:
        """Missing metrics hold the current target."""
        p = ReactivePolicy().decide(ctx(data=DataState.MISSING))
        assert p.targets == {"prefill": 2, "decode": 2}


def _brute_decode_batch(itl_ms: float, isl: float, osl: float) -> int:
    """The largest batch meeting ``itl_ms`` by trying every batch (independent of the policy's binary search)."""
    context = isl + osl / 2.0
    cap = min(MODEL.params.max_running_seqs, int(MODEL.profile.max_kv_tokens / context))
    fits = [b for b in range(1, cap + 1) if MODEL.profile.decode_step_ms(b, context) <= itl_ms]
    return max(fits) if fits else 1


def _run_interval(policy: DynamoLikePolicy, *, rate: float, start: float = 0.0, **kw: Any) -> Any:
    """Ticks of 30 s from ``start`` through one full adjustment interval at a constant arrival rate."""
    state: dict[str, Any] = kw.pop("state", {})
    proposal = None
    for k in range(7):
        proposal = policy.decide(ctx(now=start + 30.0 * k, rate=rate, state=dict(state), **kw))
        state = dict(proposal.state)
    return proposal


class TestDynamoLike:
    def test_published_formula(self) -> None:
        """After one interval: prefill = ceil(rps x wall time of one prompt); decode = ceil(rps / engine rps)."""
        p = _run_interval(DynamoLikePolicy(), rate=20.0)
        wall_s = MODEL.profile.prefill_ms(1000.0, 1.0) / 1e3
        batch = _brute_decode_batch(50.0, 1000.0, 200.0)
        step_s = MODEL.profile.decode_step_ms(batch, 1100.0) / 1e3
        assert p.targets["prefill"] == max(1, math.ceil(20.0 * wall_s - 1e-9))
        assert p.targets["decode"] == math.ceil(20.0 / (batch / (200.0 * step_s)) - 1e-9)

    def test_holds_through_the_first_interval(self) -> None:
        """Until one interval of arrivals is collected the targets hold."""
        policy = DynamoLikePolicy()
        first = policy.decide(ctx(now=0.0, rate=80.0))
        assert first.targets == {"prefill": 2, "decode": 2}
        assert "collecting" in first.reasons["prefill"]

    def test_adjusts_only_every_interval(self) -> None:
        """Between adjustment intervals the targets hold even when load jumps."""
        policy = DynamoLikePolicy()
        first = _run_interval(policy, rate=20.0)
        mid = policy.decide(ctx(now=210.0, rate=80.0, state=dict(first.state)))
        assert mid.targets == first.targets

    def test_sizes_from_arrivals_not_completions(self) -> None:
        """A saturated pool completing 5 req/s while 20 arrive is sized for the 20 arriving."""
        served = _run_interval(DynamoLikePolicy(), rate=5.0, extra={"arrival_rate_per_s": 20.0})
        arrived = _run_interval(DynamoLikePolicy(), rate=20.0)
        assert served.targets == arrived.targets

    def test_change_capped_per_interval(self) -> None:
        """A pool moves at most ``max_change`` replicas per adjustment."""
        p = _run_interval(DynamoLikePolicy({"max_change": 3}), rate=400.0)
        assert p.targets["decode"] == 2 + 3
        assert "capped" in p.reasons["decode"]

    def test_min_endpoint_floor(self) -> None:
        """Idle traffic still keeps ``min_endpoint`` replicas per pool."""
        p = _run_interval(DynamoLikePolicy({"min_endpoint": 2}), rate=0.01)
        assert p.targets == {"prefill": 2, "decode": 2}

    def test_ttft_floor_when_one_prompt_misses(self) -> None:
        """A prompt whose prefill alone exceeds the TTFT target adds the floor ceil(TTFT / target)."""
        policy = DynamoLikePolicy()
        wall_ms = MODEL.profile.prefill_ms(1000.0, 1.0)
        p = _run_interval(policy, rate=0.01, slo_ttft_ms=wall_ms / 2.5)
        assert p.targets["prefill"] == 3

    def test_arima_follows_a_trend(self) -> None:
        """On a steadily rising series the ARIMA forecast continues the trend."""
        assert arima_next([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]) == pytest.approx(70.0, rel=0.02)

    def test_arima_warm_up_is_constant(self) -> None:
        """With fewer than ``min_points`` values the forecast is the last value."""
        assert arima_next([10.0, 40.0, 90.0], min_points=5) == 90.0

    def test_arima_never_negative(self) -> None:
        """A falling series never forecasts negative demand."""
        assert arima_next([50.0, 40.0, 30.0, 20.0, 10.0, 1.0]) >= 0.0


class TestOracle:
    def test_sizes_for_future_peak(self) -> None:
        """The oracle sizes for the busiest bin of its lead-time window, not the present."""
        arrivals = np.concatenate([np.linspace(0, 60, 30), np.linspace(60, 90, 1500)])
        n = len(arrivals)
        demand = build_oracle_demand(
            arrivals,
            np.full(n, 1000),
            np.full(n, 100),
            capacity=MODEL,
            slo=SLO(1000.0, 50.0),
            roles={"prefill": PoolRole.PREFILL, "decode": PoolRole.DECODE},
            bin_s=30.0,
        )
        policy = OraclePolicy({"demand": demand})
        now = policy.decide(ctx(now=0.0))
        peak = demand.peak("prefill", 60.0, 90.0)
        assert peak[Signal.REQUEST_RATE] == pytest.approx(50.0)
        assert (
            now.targets["prefill"]
            >= MODEL.replicas_needed(
                SPECS["prefill"], peak, SLO(1000.0, 50.0), workload=Workload(1000.0, 100.0, 1000.0)
            ).replicas
        )


class TestSplitBudget:
    def test_equal_shares(self) -> None:
        """Needs 10 and 30 within 20 replicas split 5/15 (both at half)."""
        assert split_budget({"prefill": 10, "decode": 30}, SPECS, 20) == {"prefill": 5, "decode": 15}

    def test_needs_met_when_affordable(self) -> None:
        """A budget above the needs gives each pool its need."""
        assert split_budget({"prefill": 3, "decode": 4}, SPECS, 100) == {"prefill": 3, "decode": 4}


class TestSloDecodeBacklog:
    def test_queued_sequences_count_as_the_slots_that_drain_them_in_the_lead_time(self) -> None:
        """300 queued decode sequences add 300 x (sequence time / lead time) slots, not 300 standing ones."""
        w = Workload(1000.0, 200.0)
        b = MODEL.decode_batch(50.0, w)
        c = ctx(conc=600.0)
        sig = replace(c.observations["decode"].signals, running_requests=300.0, waiting_requests=300.0)
        c = replace(c, observations={**c.observations, "decode": replace(c.observations["decode"], signals=sig)})
        params = {"calibrate": False, "learn_decode_shape": False, "decode_forecast_quantile": 0.9}
        p = SloPolicy(params).decide(c)
        seq_s = 200.0 * MODEL.predict_itl_ms(1, float(b), w) / 1e3
        kept = 300.0 * seq_s / c.lead_time_s("decode")
        assert p.targets["decode"] == math.ceil((720.0 - 300.0 + kept) / b - 1e-9)
        assert "queued drain" in p.reasons["decode"]


def test_oracle_context_is_length_biased() -> None:
    """Half the requests output 10 tokens, half 1,000: the running context is near ISL + 1000 / 2, not the mean's."""
    n = 2000
    arrivals = np.arange(n) * 0.05
    out = np.where(np.arange(n) % 2 == 0, 10, 1000)
    demand = build_oracle_demand(
        arrivals,
        np.full(n, 1000),
        out,
        capacity=MODEL,
        slo=SLO(1000.0, 50.0),
        roles={"prefill": PoolRole.PREFILL, "decode": PoolRole.DECODE},
        bin_s=30.0,
    )
    w = demand.workload(60.0, 90.0, Workload(1024.0, 256.0))
    # Residence-weighted (inp + out / 2): (10 x (1000 + 5) + 1000 x (1000 + 500)) / (10 + 1000), computed by hand.
    expected = (9 * 1005.0 + 999 * 1500.0) / (9 + 999)  # residences are (out - 1) steps long
    assert w.decode_context_tokens == pytest.approx(expected, rel=0.02)
    assert w.ctx_tokens > 1000.0 + float(out.mean()) / 2.0
