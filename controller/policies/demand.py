"""Shared pieces of the built-in policies: the demand a pool must be sized for, the request shape, and
splitting a binding GPU budget between pools."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import ROLE_SIGNALS, DataState, PoolRole, PoolSpec, Signal

__all__ = ["observed_demand", "pool_demand", "split_budget", "workload_from"]


def observed_demand(ctx: PolicyContext, pool: str) -> dict[Signal, float]:
    """The signals a pool's observation reports now (empty unless its data is OK)."""
    obs = ctx.observations.get(pool)
    if obs is None or obs.state is not DataState.OK:
        return {}
    out: dict[Signal, float] = {}
    for sig in ROLE_SIGNALS[ctx.pools[pool].role]:
        v = obs.signals.demand(sig)
        if v is not None:
            out[sig] = v
    return out


def pool_demand(ctx: PolicyContext, pool: str, quantile: float, *, include_now: bool = True) -> dict[Signal, float]:
    """Per signal: the forecast ``quantile`` at the pool's lead time, raised to the observed value now.

    Empty when neither a forecast nor an OK observation exists.
    """
    now = observed_demand(ctx, pool) if include_now else {}
    out = dict(now)
    for sig, fc in ctx.forecasts.get(pool, {}).items():
        if sig not in ROLE_SIGNALS[ctx.pools[pool].role]:
            continue
        v = max(0.0, fc.quantile(quantile))
        out[sig] = max(v, now.get(sig, 0.0))
    return out


def workload_from(ctx: PolicyContext, remembered: Mapping[str, Any], defaults: Workload) -> Workload:
    """Request shape from this tick's OK observations, else the last one remembered, else ``defaults``."""
    isl = isl_p90 = isl_p99 = osl = cached = None
    for name in ctx.pools:
        obs = ctx.observations.get(name)
        if obs is None or obs.state is not DataState.OK:
            continue
        s = obs.signals
        if isl is None and s.isl_mean_tokens:
            isl, isl_p90, isl_p99 = s.isl_mean_tokens, s.isl_p90_tokens, s.isl_p99_tokens
        if isl is None and s.prompt_tokens_per_s and s.request_rate_per_s:
            isl = s.prompt_tokens_per_s / s.request_rate_per_s
        if osl is None and s.osl_mean_tokens:
            osl = s.osl_mean_tokens
        if cached is None and s.prefix_cache_hit_ratio is not None and ctx.pools[name].role is not PoolRole.DECODE:
            cached = min(1.0, s.prefix_cache_hit_ratio)
    isl = isl or _positive(remembered.get("isl_mean_tokens")) or defaults.isl_mean_tokens
    if isl_p90 is None:
        isl_p90 = _positive(remembered.get("isl_p90_tokens")) or defaults.isl_p90_tokens
    if isl_p99 is None:
        isl_p99 = _positive(remembered.get("isl_p99_tokens")) or defaults.isl_p99_tokens
    osl = osl or _positive(remembered.get("osl_mean_tokens")) or defaults.osl_mean_tokens
    if cached is None:
        cached = _positive(remembered.get("prefix_cached_share")) or 0.0
    return Workload(
        isl_mean_tokens=isl,
        osl_mean_tokens=osl,
        isl_p90_tokens=isl_p90,
        isl_p99_tokens=isl_p99,
        prefix_cached_share=cached,
    )


def _positive(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
        return float(v)
    return None


def split_budget(needs: Mapping[str, int], specs: Mapping[str, PoolSpec], budget_gpus: int) -> dict[str, int]:
    """Replicas per pool within ``budget_gpus`` that maximise the worst pool's share of its need.

    Every pool starts at its minimum; then one replica at a time goes to the pool with the lowest
    ``replicas / need`` that still fits, until the needs are met or nothing fits.
    """
    out = {p: specs[p].min_replicas for p in needs}
    used = sum(out[p] * specs[p].gpus_per_replica for p in out)
    while True:
        short = [
            p
            for p in needs
            if out[p] < min(needs[p], specs[p].max_replicas) and used + specs[p].gpus_per_replica <= budget_gpus
        ]
        if not short:
            return out
        p = min(short, key=lambda n: (out[n] / needs[n], -needs[n], n))
        out[p] += 1
        used += specs[p].gpus_per_replica
