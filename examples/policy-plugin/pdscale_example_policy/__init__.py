"""``fixed-ratio``: an example pdscale policy plugin.

Sizes the prefill pool from its observed prompt tokens/s (``prefill_tps_per_replica`` each) and keeps the
decode pool at ``ratio`` x the prefill pool. Pure: context in, proposal out; bounds, windows and the GPU
budget are applied by pdscale's guards afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pdscale.api import DataState, PolicyContext, PoolRole, Proposal

__all__ = ["FixedRatioPolicy"]


class FixedRatioPolicy:
    """decode = ceil(ratio x prefill); prefill = ceil(prompt tokens/s / prefill_tps_per_replica)."""

    name = "fixed-ratio"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        unknown = sorted(set(params) - {"ratio", "prefill_tps_per_replica"})
        if unknown:
            raise ValueError(f"fixed-ratio policy: unknown parameter(s) {unknown}")
        self.ratio = float(params.get("ratio", 2.0))
        self.per_replica = float(params.get("prefill_tps_per_replica", 8000.0))
        if not (self.ratio > 0 and self.per_replica > 0):
            raise ValueError("fixed-ratio policy: 'ratio' and 'prefill_tps_per_replica' must be > 0")

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Targets for every pool; pools without data keep their target."""
        targets = {n: ctx.states[n].target for n in ctx.pools}
        reasons = dict.fromkeys(targets, "hold: no prefill metrics")
        prefill = [n for n, s in ctx.pools.items() if s.role is PoolRole.PREFILL]
        decode = [n for n, s in ctx.pools.items() if s.role is PoolRole.DECODE]
        for p in prefill:
            obs = ctx.observations.get(p)
            if obs is None or obs.state is not DataState.OK or obs.signals.prompt_tokens_per_s is None:
                continue
            n = max(1, math.ceil(obs.signals.prompt_tokens_per_s / self.per_replica))
            targets[p], reasons[p] = n, f"{obs.signals.prompt_tokens_per_s:.0f} tok/s / {self.per_replica:.0f}"
            for d in decode:
                targets[d] = math.ceil(self.ratio * n)
                reasons[d] = f"{self.ratio:g} x prefill ({n})"
        return Proposal(targets=targets, reasons=reasons)
