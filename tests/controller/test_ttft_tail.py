"""The TTFT quantile over the prompt-length mix: wait + own prefill, infeasible prompts left out."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from pdscale.controller.core.queueing import lognormal_sigma
from pdscale.controller.core.ttft_tail import prompt_nodes, ttft_quantile_ms


def _linear(tokens: float) -> float:
    return 0.1 * tokens


class TestTtftQuantile:
    def test_no_wait_is_the_prompt_quantile(self) -> None:
        """Without queueing, the p99 TTFT is the p99 prompt's service (log-normal quantile)."""
        mean, p90 = 1000.0, 2000.0
        s = lognormal_sigma(mean, p90)
        assert s is not None
        l99 = math.exp(math.log(mean) - s * s / 2 + s * NormalDist().inv_cdf(0.99))
        got = ttft_quantile_ms(0.99, 0.0, math.inf, _linear, prompt_nodes(mean, p90), 1e9)
        assert got == pytest.approx(_linear(l99), rel=0.04)

    def test_one_prompt_length_is_the_exponential_tail(self) -> None:
        """For one prompt length, t = S + ln(C / (1 - q)) / theta (the wait's exponential tail)."""
        c, theta = 0.5, 4.0  # per second
        got = ttft_quantile_ms(0.99, c, theta, _linear, prompt_nodes(1000.0, None), 1e9)
        assert got == pytest.approx(100.0 + math.log(c / 0.01) / theta * 1e3, abs=1.0)

    def test_long_prompts_fill_the_tail(self) -> None:
        """With a spread of lengths the p99 exceeds the wait's p99 added to a mean prompt."""
        c, theta = 0.3, 10.0
        got = ttft_quantile_ms(0.99, c, theta, _linear, prompt_nodes(1000.0, 2500.0), 1e9)
        assert got > _linear(1000.0) + math.log(c / 0.01) / theta * 1e3

    def test_infeasible_prompts_are_left_out(self) -> None:
        """Prompts whose service alone exceeds the target do not set the quantile."""
        nodes = prompt_nodes(1000.0, 4000.0)
        target = 500.0  # 5,000 tokens: a few percent of this mix are longer
        assert sum(w for length, w in nodes if _linear(length) > target) > 0.01
        assert ttft_quantile_ms(0.99, 0.0, math.inf, _linear, nodes, target) <= target

    def test_nodes_are_a_distribution_with_the_mean(self) -> None:
        """The quantile nodes' weights sum to 1 and their mean is close to the log-normal's."""
        nodes = prompt_nodes(1000.0, 2500.0)
        assert sum(w for _, w in nodes) == pytest.approx(1.0)
        assert sum(length * w for length, w in nodes) == pytest.approx(1000.0, rel=0.05)


def _builtin() -> object:
    from pdscale.controller.runtime.profile import load_profile

    return load_profile("builtin:llama-3.1-70b/tp4")


class TestUsedBySizing:
    def test_capacity_mixture_at_no_load_is_the_p99_prompt(self) -> None:
        """With the mixture on and no queueing, the p99 TTFT is the observed p99 prompt's prefill plus transfer."""
        from pdscale.controller.core.capacity import CapacityParams, ProfileCapacityModel, Workload
        from pdscale.controller.core.types import SLO, Signal

        profile = _builtin()
        model = ProfileCapacityModel(profile, CapacityParams(ttft_over_prompt_mix=True))  # type: ignore[arg-type]
        w = Workload(1155.0, 211.0, 2734.0, isl_p99_tokens=4800.0)
        got = model.predict_ttft_ms(8, {Signal.REQUEST_RATE: 0.01}, SLO(1000.0, 50.0), w)
        link = model.params.kv_link_bytes_per_s_per_gpu * profile.gpus_per_replica  # type: ignore[attr-defined]
        alone = profile.prefill_ms(4800.0, 1.0) + 4800.0 * profile.kv_bytes_per_token / link * 1e3  # type: ignore[attr-defined]
        assert got == pytest.approx(alone, rel=0.04)
