"""Requests no fleet can serve within the SLO, whatever its size: counted apart, never chased.

A request is *infeasible* on a replica type when
- its prompt alone takes longer than the TTFT target to prefill on one idle replica (no queueing, no batch);
- its mean inter-token latency exceeds the ITL target at decode batch 1 (the step at its mean context); or
- the engine must refuse it: prompt + output longer than the context window, or than one replica's KV cache.

Adding replicas helps none of these, so attainment is reported over all requests and over the feasible ones,
and the planner sizes for the feasible ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pdscale.simulator.config import PerfLike, TraceLike

__all__ = ["Feasibility", "feasibility"]


@dataclass(frozen=True, slots=True)
class Feasibility:
    """Per-request flags (indexed like the trace) and the reason counts."""

    feasible: npt.NDArray[np.bool_]
    too_slow_prefill: int
    too_slow_decode: int
    too_long: int

    @property
    def infeasible(self) -> int:
        """Requests no fleet of this hardware serves within the SLO."""
        return int(np.count_nonzero(~self.feasible))

    def summary(self, ttft_slo_ms: float, itl_slo_ms: float) -> str:
        """One line for an operator, e.g. 'TTFT 1 s cannot be met for 45% of these prompts on any fleet'."""
        n = len(self.feasible)
        if not n or not self.infeasible:
            return "every request can meet the SLO on some fleet"
        parts = []
        if self.too_slow_prefill:
            share = self.too_slow_prefill / n
            parts.append(
                f"TTFT {ttft_slo_ms / 1000:g} s cannot be met for {share:.1%} of these prompts "
                f"({self.too_slow_prefill:,} of {n:,})"
            )
        if self.too_slow_decode:
            parts.append(f"ITL {itl_slo_ms:g} ms cannot be met at batch 1 for {self.too_slow_decode / n:.1%}")
        if self.too_long:
            parts.append(f"{self.too_long / n:.1%} exceed the context window or one replica's KV cache")
        return "; ".join(parts) + " on any fleet"


def _by_unique(values: npt.NDArray[np.int64], fn: object) -> npt.NDArray[np.float64]:
    uniq, inverse = np.unique(values, return_inverse=True)
    out = np.array([fn(int(v)) for v in uniq], dtype=np.float64)  # type: ignore[operator]
    return out[inverse]


def feasibility(
    perf: PerfLike, trace: TraceLike, ttft_slo_ms: float, itl_slo_ms: float, max_model_len: int = 0
) -> Feasibility:
    """Which requests of ``trace`` some fleet of ``perf`` replicas can serve within the targets."""
    inp = np.asarray(trace.input_tokens, dtype=np.int64)
    out = np.asarray(trace.output_tokens, dtype=np.int64)
    n = len(inp)
    if n == 0:
        return Feasibility(np.ones(0, dtype=np.bool_), 0, 0, 0)
    window = int(max_model_len or getattr(perf, "context_window_tokens", 0) or 0)
    too_long = inp + out > int(perf.max_kv_tokens)
    if window:
        too_long |= inp + out > window
    prefill_ms = _by_unique(inp, lambda p: perf.prefill_ms(float(p), float(p) ** 2, 1))
    slow_prefill = ~too_long & (prefill_ms > ttft_slo_ms)
    mean_ctx = inp + out // 2
    decode_ms = _by_unique(mean_ctx, lambda c: perf.decode_step_ms(1, float(c)))
    slow_decode = ~too_long & ~slow_prefill & (out > 1) & (decode_ms > itl_slo_ms)
    feasible = ~(too_long | slow_prefill | slow_decode)
    return Feasibility(
        feasible=feasible,
        too_slow_prefill=int(np.count_nonzero(slow_prefill)),
        too_slow_decode=int(np.count_nonzero(slow_decode)),
        too_long=int(np.count_nonzero(too_long)),
    )
