"""Capacity model: profile interpolation, queueing math, prefill/decode/colocated sizing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pdscale.controller.core.capacity import (
    CapacityParams,
    Correction,
    DecodePoint,
    KvReservation,
    PrefillPoint,
    Profile,
    ProfileCapacityModel,
    Workload,
)
from pdscale.controller.core.queueing import (
    erlang_c,
    lognormal_cv2,
    lognormal_exceedance,
    lognormal_sigma,
    mgc_wait_quantile_s,
)
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signal
from tests.helpers.capacity_profiles import decode_ms, prefill_ms, small_profile

SLO_ = SLO(ttft_ms=1000.0, itl_ms=50.0)
PREFILL = PoolSpec("prefill", PoolRole.PREFILL, 1, 0, 100)
DECODE = PoolSpec("decode", PoolRole.DECODE, 1, 0, 100)
COLOCATED = PoolSpec("colocated", PoolRole.COLOCATED, 1, 0, 100)
W = Workload(isl_mean_tokens=1000.0, osl_mean_tokens=200.0, isl_p90_tokens=2000.0)


class TestQueueing:
    def test_erlang_c_single_server_is_utilisation(self) -> None:
        """For one server the probability of waiting equals the utilisation."""
        assert erlang_c(1, 0.3) == pytest.approx(0.3)

    def test_erlang_c_known_value(self) -> None:
        """Two servers at offered load 1 wait with probability 1/3."""
        assert erlang_c(2, 1.0) == pytest.approx(1.0 / 3.0)

    def test_unstable_queue_is_infinite(self) -> None:
        """At or above capacity the waiting-time quantile is infinite."""
        assert mgc_wait_quantile_s(2, 10.0, 5.0, 0.99) == math.inf

    def test_mm1_quantile_matches_exact(self) -> None:
        """For M/M/1 the approximation is exact: P(W > t) = rho exp(-(mu - lambda) t)."""
        lam, mu, q = 0.5, 1.0, 0.99
        assert mgc_wait_quantile_s(1, lam, mu, q) == pytest.approx(math.log(0.5 / 0.01) / 0.5)

    def test_more_variability_longer_tail(self) -> None:
        """Bursty arrivals lengthen the waiting-time quantile (Allen-Cunneen)."""
        assert mgc_wait_quantile_s(4, 3.0, 1.0, 0.99, arrival_cv2=4.0) > mgc_wait_quantile_s(4, 3.0, 1.0, 0.99)

    def test_lognormal_cv2_grows_with_spread(self) -> None:
        """A wider p90 relative to the mean means more variability."""
        assert lognormal_cv2(1000.0, 3000.0) > lognormal_cv2(1000.0, 1500.0) > 0.0

    def test_lognormal_sigma_recovers_the_parameter(self) -> None:
        """A log-normal built from mu = ln 1000, sigma = 0.8 is fitted back to sigma 0.8 from its mean and p90."""
        mu, sigma = math.log(1000.0), 0.8
        mean, p90 = math.exp(mu + sigma * sigma / 2.0), math.exp(mu + 1.2815515655446004 * sigma)
        assert lognormal_sigma(mean, p90) == pytest.approx(sigma)

    def test_lognormal_exceedance_at_median_and_p90(self) -> None:
        """Half the mass lies above the median and a tenth above the 90th percentile."""
        mu, sigma = math.log(2000.0), 1.1
        mean, p90 = math.exp(mu + sigma * sigma / 2.0), math.exp(mu + 1.2815515655446004 * sigma)
        assert lognormal_exceedance(mean, p90, 2000.0) == pytest.approx(0.5)
        assert lognormal_exceedance(mean, p90, p90) == pytest.approx(0.1)

    def test_lognormal_exceedance_of_a_point_mass(self) -> None:
        """With p90 equal to the mean the lengths are all the mean: nothing above it, everything below."""
        assert lognormal_exceedance(1000.0, 1000.0, 1500.0) == 0.0
        assert lognormal_exceedance(1000.0, 1000.0, 500.0) == 1.0


class TestProfile:
    def test_interpolates_measured_points_exactly(self) -> None:
        """Measured points are returned as measured."""
        p = small_profile()
        assert p.prefill_ms(1024, 4) == pytest.approx(prefill_ms(1024, 4))
        assert p.decode_step_ms(64, 1024) == pytest.approx(decode_ms(64, 1024))

    def test_interpolates_between_points(self) -> None:
        """A linear model is reproduced between grid points."""
        p = small_profile()
        assert p.decode_step_ms(48, 1536) == pytest.approx(decode_ms(48, 1536), rel=0.05)

    def test_extrapolates_upward(self) -> None:
        """Beyond the grid, times keep growing with the last slope."""
        p = small_profile()
        assert p.decode_step_ms(512, 1024) > p.decode_step_ms(256, 1024)

    def test_single_batch_profile_scales_by_tokens(self) -> None:
        """With only batch-1 prefill data, a batch of k prompts costs like one prompt k times longer."""
        p = Profile(
            "m", 1, "bf16", 1, 1, 1000,
            prefill=(PrefillPoint(100, 1, 10.0), PrefillPoint(1000, 1, 100.0)),
            decode=(DecodePoint(1, 0, 5.0),),
        )  # fmt: skip
        assert p.prefill_ms(100, 5) == pytest.approx(50.0)

    def test_rejects_empty_sections(self) -> None:
        """A profile without decode points is rejected."""
        with pytest.raises(ValueError, match="at least one"):
            Profile("m", 1, "bf16", 1, 1, 1000, prefill=(PrefillPoint(1, 1, 1.0),), decode=())


class TestPrefillSizing:
    model = ProfileCapacityModel(small_profile())

    def test_zero_demand_needs_zero(self) -> None:
        """No requests need no prefill replicas."""
        est = self.model.replicas_needed(PREFILL, {Signal.REQUEST_RATE: 0.0}, SLO_, workload=W)
        assert est.replicas == 0

    def test_more_load_more_replicas(self) -> None:
        """Replicas grow with the request rate."""
        low = self.model.replicas_needed(PREFILL, {Signal.REQUEST_RATE: 5.0}, SLO_, workload=W).replicas
        high = self.model.replicas_needed(PREFILL, {Signal.REQUEST_RATE: 50.0}, SLO_, workload=W).replicas
        assert high > low >= 1

    def test_meets_ttft_quantile(self) -> None:
        """The size chosen predicts a TTFT within target, and one fewer does not."""
        demand = {Signal.REQUEST_RATE: 40.0}
        est = self.model.replicas_needed(PREFILL, demand, SLO_, workload=W)
        assert est.predicted_ttft_ms is not None
        assert est.predicted_ttft_ms <= SLO_.ttft_ms
        fewer = self.model.predict_ttft_ms(est.replicas - 1, demand, SLO_, W)
        assert fewer > SLO_.ttft_ms or est.replicas - 1 < self.model._min_servers(40.0, 1e9)

    def test_tail_sizing_exceeds_mean_sizing(self) -> None:
        """Sizing for the TTFT tail needs more replicas than mean service throughput alone."""
        demand = {Signal.REQUEST_RATE: 40.0}
        tight = SLO(ttft_ms=400.0, itl_ms=50.0)
        est = self.model.replicas_needed(PREFILL, demand, tight, workload=W)
        per_replica = self.model.prefill_throughput_tps(W.isl_mean_tokens) / W.isl_mean_tokens
        assert est.replicas > math.ceil(40.0 / per_replica)

    def test_isl_derived_from_demand(self) -> None:
        """Without a workload hint, ISL is prompt tokens/s over requests/s."""
        w = self.model.workload({Signal.PREFILL_TPS: 3000.0, Signal.REQUEST_RATE: 2.0})
        assert w.isl_mean_tokens == pytest.approx(1500.0)

    def test_correction_scales_need(self) -> None:
        """A slower-than-profiled correction asks for more replicas."""
        demand = {Signal.REQUEST_RATE: 40.0}
        base = self.model.replicas_needed(PREFILL, demand, SLO_, workload=W).replicas
        slow = self.model.replicas_needed(PREFILL, demand, SLO_, workload=W, correction=Correction(prefill=2.0))
        assert slow.replicas > base


class TestDecodeSizing:
    model = ProfileCapacityModel(small_profile())

    def test_batch_meets_itl_with_headroom(self) -> None:
        """The chosen batch's step fits ITL x headroom, one more does not."""
        b = self.model.decode_batch(50.0, W)
        ctx = W.isl_mean_tokens + W.osl_mean_tokens / 2
        assert decode_ms(b, int(ctx)) <= 45.0 + 0.5
        assert self.model.profile.decode_step_ms(b + 1, ctx) > 45.0

    def test_replicas_are_concurrency_over_batch(self) -> None:
        """Replicas = ceil(concurrency / batch)."""
        b = self.model.decode_batch(50.0, W)
        est = self.model.replicas_needed(DECODE, {Signal.DECODE_CONCURRENCY: 2.5 * b}, SLO_, workload=W)
        assert est.replicas == 3

    def test_measured_context_sets_the_step(self) -> None:
        """With a measured running context the ITL-bound batch is read at that context, not at ISL + OSL / 2."""
        long = replace(W, decode_context_tokens=3000.0)
        b = self.model.decode_batch(50.0, long)
        assert decode_ms(b, 3000) <= 45.0 + 0.5
        assert self.model.profile.decode_step_ms(b + 1, 3000.0) > 45.0
        assert b < self.model.decode_batch(50.0, W)

    def test_measured_context_reserves_twice_the_generated_part(self) -> None:
        """A running sequence is half-way through its output: it has reserved ISL + 2 x (context - ISL)."""
        assert replace(W, decode_context_tokens=1400.0).reserved_tokens == 1000.0 + 2 * 400.0
        assert replace(W, decode_context_tokens=1050.0).reserved_tokens == 1000.0 + 200.0  # never under ISL + OSL
        assert W.reserved_tokens == 1200.0

    def test_kv_limits_batch(self) -> None:
        """When KV is scarce the batch is what fits, not what the ITL allows."""
        model = ProfileCapacityModel(small_profile(max_kv_tokens=12_000))
        assert model.decode_batch(50.0, W) == 10

    def test_average_reservation_fits_more(self) -> None:
        """Counting ISL + OSL/2 per sequence fits more sequences than the full reservation."""
        scarce = small_profile(max_kv_tokens=13_200)
        full = ProfileCapacityModel(scarce).decode_batch(50.0, W)
        avg = ProfileCapacityModel(scarce, CapacityParams(kv_reservation=KvReservation.AVERAGE)).decode_batch(50.0, W)
        assert avg > full

    def test_littles_law_fallback(self) -> None:
        """Without a concurrency signal, concurrency = request rate x OSL x ITL."""
        est = self.model.replicas_needed(DECODE, {Signal.REQUEST_RATE: 10.0}, SLO_, workload=W)
        assert est.replicas == math.ceil(10.0 * 200.0 * 0.05 / self.model.decode_batch(50.0, W))


class TestColocated:
    model = ProfileCapacityModel(small_profile())

    def test_colocated_needs_more_than_decode_alone(self) -> None:
        """Prefill chunks stall decode steps, so a colocated pool needs at least the decode pool's size."""
        demand = {Signal.REQUEST_RATE: 20.0, Signal.DECODE_CONCURRENCY: 200.0}
        colo = self.model.replicas_needed(COLOCATED, demand, SLO_, workload=W)
        dec = self.model.replicas_needed(DECODE, demand, SLO_, workload=W)
        assert colo.replicas >= dec.replicas
        assert colo.predicted_itl_ms is not None
        assert colo.predicted_itl_ms <= SLO_.itl_ms
