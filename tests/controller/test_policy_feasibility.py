"""TTFT feasibility: the prompts no fleet can serve in time, and the slo policy not buying replicas for them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pdscale.controller.core.capacity import ProfileCapacityModel, Workload
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.queueing import lognormal_exceedance
from pdscale.controller.core.types import SLO
from pdscale.controller.policies.feasibility import ttft_feasibility
from pdscale.controller.policies.slo import SloPolicy
from tests.controller.test_policies import ctx
from tests.helpers.capacity_profiles import prefill_ms, small_profile

MODEL = ProfileCapacityModel(small_profile())
Z90 = 1.2815515655446004


def _lognormal(mu: float, sigma: float) -> tuple[float, float]:
    return math.exp(mu + sigma * sigma / 2.0), math.exp(mu + Z90 * sigma)


def _alone_ms(tokens: float) -> float:
    prof, p = MODEL.profile, MODEL.params
    link_bytes_per_s = p.kv_link_bytes_per_s_per_gpu * prof.gpus_per_replica
    return prefill_ms(tokens, 1) + tokens * prof.kv_bytes_per_token / link_bytes_per_s * 1e3


class TestTtftFeasibility:
    def test_longest_feasible_prompt_fits_the_target(self) -> None:
        """The longest feasible prompt's prefill plus transfer meets 500 ms; 1% longer does not."""
        f = ttft_feasibility(MODEL, Workload(1000.0, 200.0, 2000.0), SLO(500.0, 50.0))
        assert _alone_ms(f.max_prompt_tokens) <= 500.0 < _alone_ms(f.max_prompt_tokens * 1.01)

    def test_share_is_the_lognormal_tail_past_it(self) -> None:
        """The infeasible share is P(prompt > longest feasible) of the log-normal with that mean and p90."""
        mu, sigma = math.log(3000.0), 0.9
        mean, p90 = _lognormal(mu, sigma)
        f = ttft_feasibility(MODEL, Workload(mean, 200.0, p90), SLO(500.0, 50.0))
        expected = 0.5 * math.erfc((math.log(f.max_prompt_tokens) - mu) / (sigma * math.sqrt(2.0)))
        assert f.infeasible_share == pytest.approx(expected, rel=1e-6)

    def test_short_prompts_are_attainable(self) -> None:
        """1k-token prompts against a 1 s target: no tail that more replicas cannot fix."""
        f = ttft_feasibility(MODEL, Workload(1000.0, 200.0, 2000.0), SLO(1000.0, 50.0))
        assert f.infeasible_share < 1e-3
        assert not f.tail_unattainable

    def test_long_prompts_fill_the_tail(self) -> None:
        """Prompts around 8k tokens (p90 16k) against 1 s: far more than 1% cannot be served in time."""
        f = ttft_feasibility(MODEL, Workload(8000.0, 200.0, 16000.0), SLO(1000.0, 50.0))
        assert f.infeasible_share > 0.05
        assert f.tail_unattainable

    def test_heavier_tail_than_any_lognormal_is_not_none(self) -> None:
        """A p90 three times the mean (no log-normal fits) still puts some mass past 4x the mean."""
        assert 0.0 < lognormal_exceedance(1000.0, 3000.0, 4000.0) < 0.1


def _long_prompts(c: PolicyContext) -> PolicyContext:
    """The same context with prompts of mean 8k and p90 16k tokens."""
    obs = {
        n: replace(o, signals=replace(o.signals, isl_mean_tokens=8000.0, isl_p90_tokens=16000.0))
        for n, o in c.observations.items()
    }
    return replace(c, observations=obs)


class TestSloIgnoresInfeasibleMisses:
    def test_unattainable_ttft_miss_buys_no_margin(self) -> None:
        """With slo_feedback on, a TTFT miss that long prompts alone explain leaves the margin at 1."""
        policy = SloPolicy({"slo_feedback": True, "measure_arrival_cv2": False})
        p = policy.decide(_long_prompts(ctx(extra={"ttft_p99_ms": 5000.0})))
        assert p.estimates["prefill"]["slo_margin"] == 1.0

    def test_reason_says_so(self) -> None:
        """The prefill reason names the share of prompts no fleet serves in time."""
        p = SloPolicy({"slo_feedback": True}).decide(_long_prompts(ctx(extra={"ttft_p99_ms": 5000.0})))
        assert "not attainable on any fleet" in p.reasons["prefill"]
        assert p.estimates["prefill"]["ttft_infeasible_share"] > 0.05

    def test_attainable_miss_still_steps_up(self) -> None:
        """Short prompts: the same miss raises the margin as before."""
        policy = SloPolicy({"slo_feedback": True, "measure_arrival_cv2": False})
        p = policy.decide(ctx(extra={"ttft_p99_ms": 5000.0, "isl_p90_tokens": 2000.0}))
        assert p.estimates["prefill"]["slo_margin"] == pytest.approx(1.15)
