"""How much of the SLO no fleet can meet: prompts whose prefill alone outlasts the TTFT target.

A prompt whose prefill on one idle replica (plus its KV transfer) already takes longer than the TTFT target
misses it on any fleet: more replicas shorten the queue, never the prompt's own compute. When the share of such
prompts reaches the SLO's tail (1 - quantile, 1% at p99), the observed TTFT p99 misses whatever the policy buys,
so a policy that reads that miss as "too few replicas" buys GPUs chasing requests it cannot serve. This module
estimates the share from the request shape the metrics report (prompt-length mean and p90, fitted with a
log-normal, :func:`pdscale.controller.core.queueing.lognormal_exceedance`) and the capacity model's profile; the
policies then discount the TTFT part of an observed miss (the benchmark reports such requests apart as
*infeasible*, ``pdscale.simulator.feasibility``). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from pdscale.controller.core.capacity import Correction, Workload
from pdscale.controller.core.protocols import CapacityModel
from pdscale.controller.core.queueing import lognormal_exceedance
from pdscale.controller.core.types import SLO

__all__ = ["TtftFeasibility", "ttft_feasibility"]

_MAX_PROMPT_TOKENS = 1 << 21
"""Search bound for the longest feasible prompt (2M tokens: past any context window shipped in 2026)."""


@dataclass(frozen=True, slots=True)
class TtftFeasibility:
    """The longest prompt one replica can prefill within the TTFT target, and the share of prompts past it."""

    max_prompt_tokens: float
    """Longest prompt whose batch-1 prefill plus KV transfer fits the TTFT target (0: none does)."""
    infeasible_share: float
    """Estimated share of prompts longer than that (0 when the prompt-length p90 is unknown and the mean fits)."""
    tail_share: float
    """The share of requests the SLO lets miss (1 - quantile)."""

    @property
    def tail_unattainable(self) -> bool:
        """True when the infeasible prompts alone fill the SLO's tail: the TTFT quantile misses on any fleet."""
        return self.infeasible_share >= self.tail_share

    def note(self, ttft_ms: float) -> str:
        """A reason fragment for the decision record."""
        return (
            f"TTFT p{(1.0 - self.tail_share) * 100:g} not attainable on any fleet: ~{self.infeasible_share:.1%} of "
            f"prompts (> {self.max_prompt_tokens:,.0f} tok) alone exceed {ttft_ms:g} ms on one replica; "
            "their misses buy no replicas"
        )


def _alone_ms(model: CapacityModel, tokens: float, corr: Correction) -> float:
    """Batch-1 prefill of one prompt plus its KV transfer to decode, as the capacity model sees it."""
    prof, p = model.profile, model.params
    link = p.kv_link_bytes_per_s_per_gpu * prof.gpus_per_replica
    return prof.prefill_ms(tokens, 1.0) * corr.prefill + tokens * prof.kv_bytes_per_token / link * 1e3


def ttft_feasibility(model: CapacityModel, w: Workload, slo: SLO, corr: Correction | None = None) -> TtftFeasibility:
    """The TTFT feasibility of this request shape on this model's hardware (bisection on prompt length)."""
    corr = corr or Correction()
    tail = 1.0 - slo.quantile
    lo, hi = 0.0, float(_MAX_PROMPT_TOKENS)
    if _alone_ms(model, hi, corr) <= slo.ttft_ms:
        return TtftFeasibility(hi, 0.0, tail)
    if _alone_ms(model, 1.0, corr) > slo.ttft_ms:
        return TtftFeasibility(0.0, 1.0, tail)
    lo = 1.0
    while hi - lo > max(1.0, lo * 1e-4):
        mid = (lo + hi) / 2.0
        if _alone_ms(model, mid, corr) <= slo.ttft_ms:
            lo = mid
        else:
            hi = mid
    if w.isl_p90_tokens is None:
        share = 1.0 if w.isl_mean_tokens > lo else 0.0
    else:
        share = lognormal_exceedance(w.isl_mean_tokens, w.isl_p90_tokens, lo)
    return TtftFeasibility(lo, share, tail)
