"""SLO feedback: a per-pool demand margin that grows when the pool misses its latency target and decays back.

The capacity model sizes for the forecast with a queueing model of Poisson arrivals. Traffic that is burstier
than that at the minute scale (the Azure code trace: inter-arrival CV 13), or a forecast band that is too
narrow, shows up as observed tail latency over target. The margin answers it the way an operator would: a
step up when the pool misses (at most once per lead time, since capacity bought by the last step cannot have
arrived earlier), and an exponential decay back to 1 with a half-life while it holds. Pure: time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Margin", "update_margin"]


@dataclass(frozen=True, slots=True)
class Margin:
    """A demand multiplier (>= 1) and when it last stepped up."""

    factor: float = 1.0
    raised_at_s: float | None = None
    updated_at_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for policy state."""
        return {"factor": self.factor, "raised_at_s": self.raised_at_s, "updated_at_s": self.updated_at_s}

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> Margin:
        """Parse ``to_dict`` output; anything malformed starts fresh."""
        if not isinstance(data, Mapping):
            return Margin()
        try:
            factor = float(data.get("factor", 1.0))
            raised = data.get("raised_at_s")
            updated = data.get("updated_at_s")
            return Margin(
                factor=factor if math.isfinite(factor) and factor >= 1.0 else 1.0,
                raised_at_s=float(raised) if raised is not None else None,
                updated_at_s=float(updated) if updated is not None else None,
            )
        except (TypeError, ValueError):
            return Margin()


def update_margin(
    m: Margin,
    *,
    now_s: float,
    violated: bool | None,
    step: float,
    half_life_s: float,
    max_factor: float,
    lead_time_s: float,
) -> Margin:
    """The margin after this tick: ``violated`` None means no latency data (decay only)."""
    factor = m.factor
    if m.updated_at_s is not None and half_life_s > 0 and now_s > m.updated_at_s:
        factor = 1.0 + (factor - 1.0) * 0.5 ** ((now_s - m.updated_at_s) / half_life_s)
    raised = m.raised_at_s
    if violated and (raised is None or now_s - raised >= lead_time_s):
        factor, raised = factor * (1.0 + step), now_s
    return Margin(factor=min(max_factor, max(1.0, factor)), raised_at_s=raised, updated_at_s=now_s)
