"""The ``slo`` policy's use of the learned prefill shape (``core.prefill_shape``): the points it learns from and
the correction it sizes prefill with.

Each tick, every disaggregated prefill pool with data gives one point: its mean tokens per batch and its mean
batch time (``Signals.prefill_batch_tokens_mean`` / ``prefill_batch_ms_mean``), against the profile's time for a
batch of that many tokens (``ProfileCapacityModel.profile_prefill_batch_ms``). Once the shape is trusted, prefill
is sized with its factor at each batch the capacity model prices: a full batch (the service rate), the tail
prompt alone (the TTFT quantile) and the mean prompt alone; the scalar prefill factor is then not used for
prefill pools (it keeps learning, as the fallback). A capacity model without ``profile_prefill_batch_ms`` learns
nothing and sizes as before.
"""

from __future__ import annotations

import math
from dataclasses import replace

from pdscale.controller.core.capacity import Correction, Workload
from pdscale.controller.core.prefill_shape import PrefillShape, PrefillShapeSettings
from pdscale.controller.core.protocols import CapacityModel, PolicyContext
from pdscale.controller.core.types import DataState, PoolRole

__all__ = ["observe_prefill_shape", "prefix_reuse", "shaped_prefill"]


def observe_prefill_shape(
    ctx: PolicyContext, model: CapacityModel, w: Workload, shape: PrefillShape, s: PrefillShapeSettings
) -> PrefillShape:
    """Fold this tick's ``(batch tokens, observed / profile batch time)`` point of every prefill pool in."""
    profile_ms = getattr(model, "profile_prefill_batch_ms", None)
    if not callable(profile_ms):
        return shape
    for name, spec in ctx.pools.items():
        obs = ctx.observations.get(name)
        if spec.role is not PoolRole.PREFILL or obs is None or obs.state is not DataState.OK:
            continue
        if ctx.states[name].ready < 1:
            continue
        tokens, ms = obs.signals.prefill_batch_tokens_mean, obs.signals.prefill_batch_ms_mean
        if not tokens or not ms:
            continue
        predicted = float(profile_ms(tokens, w))
        if math.isfinite(predicted) and predicted > 0.0:
            shape = shape.observe(ctx.now_s, tokens, ms / predicted, s)
    return shape


def prefix_reuse(w: Workload) -> tuple[str, dict[str, float]]:
    """The reason's note and estimate for a prefill pool sized on the uncached part of its prompts (empty when
    the engine reports no prefix-cache hits)."""
    if w.prefix_cached_share <= 0.0:
        return "", {}
    note = (
        f"prefix cache serves {w.prefix_cached_share:.0%} of prompt tokens: prefill sized on the uncached "
        f"{w.isl_mean_tokens * w.uncached:.0f} of {w.isl_mean_tokens:.0f} tok"
    )
    return note, {"prefix_cached_share": w.prefix_cached_share}


def shaped_prefill(
    model: CapacityModel, w: Workload, corr: Correction, shape: PrefillShape, s: PrefillShapeSettings
) -> tuple[Correction, str, dict[str, float]]:
    """The prefill correction from the learned shape, the reason's note and the estimates it adds (all empty
    until the shape is trusted)."""
    if shape.factor(1.0, s) is None:
        return corr, "", {}

    def at(tokens: float) -> float:
        f = shape.factor(tokens, s)
        return corr.prefill if f is None else f

    budget = float(model.params.token_budget)
    isl = max(1.0, w.isl_mean_tokens)
    full = isl * max(1.0, math.floor(budget / isl)) if isl <= budget else isl
    tail = w.isl_tail_tokens
    note = (
        f"{shape.describe(s)}: x{at(full):.2f} at a full batch ({full:.0f} tok), "
        f"x{at(tail):.2f} at the tail prompt ({tail:.0f} tok)"
    )
    estimates = {"prefill_shape_full_batch": at(full), "prefill_shape_tail_prompt": at(tail)}
    return replace(corr, prefill_at=at), note, estimates
