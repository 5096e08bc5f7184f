"""Prefix reuse: prefill is sized on the uncached part of each prompt when the engine reports cache hits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signal
from pdscale.controller.policies.slo import SloPolicy
from pdscale.controller.sources.promql import PRESETS
from tests.controller.test_policies import MODEL, ctx

PREFILL = PoolSpec(name="prefill", role=PoolRole.PREFILL, gpus_per_replica=4, min_replicas=1, max_replicas=64)
W = Workload(4000.0, 200.0, 8000.0)


class TestCapacityOnUncachedTokens:
    def test_half_cached_prompts_need_fewer_prefill_replicas(self) -> None:
        """With half of every prompt cached, prefill needs fewer replicas than with none."""
        demand = {Signal.REQUEST_RATE: 20.0}
        slo = SLO(2000.0, 50.0)
        full = MODEL.replicas_needed(PREFILL, demand, slo, workload=W).replicas
        half = MODEL.replicas_needed(PREFILL, demand, slo, workload=replace(W, prefix_cached_share=0.5)).replicas
        assert half < full

    def test_service_rate_is_that_of_the_uncached_prompt(self) -> None:
        """A prompt of 4,000 tokens, 75% cached, is busy-share priced as a 1,000-token prompt."""
        demand = {Signal.REQUEST_RATE: 5.0}
        cached = MODEL.predict_prefill_busy_share(2, demand, replace(W, prefix_cached_share=0.75))
        short = MODEL.predict_prefill_busy_share(2, demand, Workload(1000.0, 200.0, 2000.0))
        assert cached == pytest.approx(short)


class TestSloSizesOnUncachedTokens:
    def test_reported_hits_lower_prefill_and_show_in_the_reason(self) -> None:
        """A reported 60% prefix-cache hit ratio lowers the prefill target and the reason says why."""
        plain = SloPolicy().decide(ctx(rate=40.0))
        cached = SloPolicy().decide(ctx(rate=40.0, extra={"prefix_cache_hit_ratio": 0.6}))
        assert cached.targets["prefill"] < plain.targets["prefill"]
        assert "prefix cache serves 60% of prompt tokens" in cached.reasons["prefill"]
        assert cached.estimates["prefill"]["prefix_cached_share"] == pytest.approx(0.6)
        assert "prefix cache" not in cached.reasons["decode"]

    def test_decode_is_not_sized_on_uncached_tokens(self) -> None:
        """Decode holds the whole context's KV whatever the prefill cache served: its target is unchanged."""
        plain = SloPolicy().decide(ctx(rate=40.0))
        cached = SloPolicy().decide(ctx(rate=40.0, extra={"prefix_cache_hit_ratio": 0.6}))
        assert cached.targets["decode"] == plain.targets["decode"]


class TestPresets:
    def test_vllm_reads_prefix_cache_hits_over_queries(self) -> None:
        """The vLLM preset's hit ratio is rate(hits) / rate(queries) of vLLM's prefix-cache counters."""
        (query,) = PRESETS["vllm"].queries["prefix_cache_hit_ratio"]
        assert "vllm:prefix_cache_hits_total" in query
        assert "vllm:prefix_cache_queries_total" in query

    def test_sglang_reads_its_cache_hit_rate(self) -> None:
        """SGLang exports the hit rate itself."""
        assert "sglang:cache_hit_rate" in PRESETS["sglang"].queries["prefix_cache_hit_ratio"][0]
