"""The seasonal floor on a pool's demand at its lead time (``forecasting.seasonal``), for the ``slo`` policy.

A gap in traffic is not the new normal when yesterday and last week at this time say the load comes back:
each demand signal is raised to what history held at ``now + lead`` (scaled by the share of history's recent
load that came back today), so a return is pre-scaled one cold start ahead instead of being seen once it has
arrived. Where no history is held (a fresh daemon without a backfill, a one-day replay) nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import Signal
from pdscale.forecasting.seasonal import FloorSettings, came_back, seasonal_floor

__all__ = ["FloorResult", "raise_to_floor"]


@dataclass(frozen=True, slots=True)
class FloorResult:
    """The demand after the floor, what the reason says, and the estimates it adds (empty when it said nothing)."""

    demand: dict[Signal, float]
    note: str
    estimates: dict[str, float]


def raise_to_floor(
    ctx: PolicyContext, pool: str, demand: Mapping[Signal, float], settings: FloorSettings
) -> FloorResult:
    """Raise each signal of ``demand`` to its seasonal floor at the pool's lead time; how much of history's load
    came back is measured on the pool's request rate where it is held (``forecasting.seasonal``).

    The estimates carry every floor found (``seasonal_floor_<signal>``) and the smallest came-back ratio, binding
    or not, so ``admin explain`` shows what history said; the note is set only when a floor raised a signal.
    """
    out = dict(demand)
    histories = ctx.seasonal.get(pool, {})
    lead_s = ctx.lead_time_s(pool)
    raised: list[str] = []
    estimates: dict[str, float] = {}
    load = histories.get(Signal.REQUEST_RATE)
    ratios = came_back(load, ctx.now_s, settings) if load is not None else None  # once for the pool's signals
    for sig, value in demand.items():
        hist = histories.get(sig)
        if hist is None:
            continue
        floor = seasonal_floor(hist, ctx.now_s, lead_s, settings, ratios=ratios)
        if floor is None:
            continue
        estimates[f"seasonal_floor_{sig.value}"] = floor.value
        ratio = min(m.ratio for m in floor.matches)
        estimates["seasonal_ratio"] = min(ratio, estimates.get("seasonal_ratio", ratio))
        if floor.value > value:
            out[sig] = floor.value
            raised.append(f"{sig.value} {value:.3g} -> {floor.value:.3g} ({floor.describe()})")
    note = f"seasonal floor in {lead_s:.0f} s: {'; '.join(raised)}" if raised else ""
    return FloorResult(demand=out, note=note, estimates=estimates)
