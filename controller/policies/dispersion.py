"""Arrival variability measured from request counts: the index of dispersion, used as the queueing model's ca^2.

For Poisson arrivals the count of requests in a window has variance equal to its mean (index of dispersion
1). Clumped arrivals (the Azure code trace has an inter-arrival CV of 13) and minute-scale bursts raise it;
for a renewal process the index of dispersion of long windows tends to ca^2, the squared coefficient of
variation the Allen-Cunneen M/G/c approximation takes (the QNA method estimates it the same way). Window
counts are differenced twice, so a ramp of the daily curve does not count as variability:
``IDC = E[(N_k - 2 N_(k-1) + N_(k-2))^2] / (6 E[N])`` (for independent counts the second difference has
six times their variance), both terms exponentially weighted in time. Pure: time passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Dispersion"]


@dataclass(frozen=True, slots=True)
class Dispersion:
    """Running estimate of the index of dispersion of per-window request counts."""

    mean_count: float = 0.0
    mean_sq_diff: float = 0.0
    last_count: float | None = None
    prev_count: float | None = None
    updated_at_s: float | None = None
    samples: int = 0

    def observe(self, now_s: float, rate_per_s: float | None, window_s: float, half_life_s: float) -> Dispersion:
        """Fold in one window's arrival rate (None: no data, the state is kept)."""
        if rate_per_s is None or not math.isfinite(rate_per_s) or rate_per_s < 0 or window_s <= 0:
            return self
        count = rate_per_s * window_s
        if self.updated_at_s is None or self.last_count is None or self.prev_count is None:
            return Dispersion(count, 0.0, count, self.last_count, now_s, 0)
        dt = max(0.0, now_s - self.updated_at_s)
        # A running mean over the first samples (weight 1/n), then exponential forgetting: the first
        # difference must not dominate the estimate for hours.
        n = self.samples + 1
        keep = min(0.5 ** (dt / half_life_s) if half_life_s > 0 else 0.0, (n - 1) / n)
        sq = (count - 2.0 * self.last_count + self.prev_count) ** 2
        return Dispersion(
            mean_count=keep * self.mean_count + (1 - keep) * count,
            mean_sq_diff=keep * self.mean_sq_diff + (1 - keep) * sq,
            last_count=count,
            prev_count=self.last_count,
            updated_at_s=now_s,
            samples=self.samples + 1,
        )

    def index(self, *, min_samples: int = 10, floor: float = 1.0, cap: float = 64.0) -> float | None:
        """The index of dispersion, clamped to ``[floor, cap]``; None until ``min_samples`` differences."""
        if self.samples < min_samples or self.mean_count <= 0:
            return None
        return min(cap, max(floor, self.mean_sq_diff / (6.0 * self.mean_count)))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for policy state."""
        return {
            "mean_count": self.mean_count,
            "mean_sq_diff": self.mean_sq_diff,
            "last_count": self.last_count,
            "prev_count": self.prev_count,
            "updated_at_s": self.updated_at_s,
            "samples": self.samples,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> Dispersion:
        """Parse ``to_dict`` output; anything malformed starts fresh."""
        if not isinstance(data, Mapping):
            return Dispersion()
        try:
            last, prev, updated = data.get("last_count"), data.get("prev_count"), data.get("updated_at_s")
            return Dispersion(
                mean_count=float(data.get("mean_count", 0.0)),
                mean_sq_diff=float(data.get("mean_sq_diff", 0.0)),
                last_count=float(last) if last is not None else None,
                prev_count=float(prev) if prev is not None else None,
                updated_at_s=float(updated) if updated is not None else None,
                samples=int(data.get("samples", 0)),
            )
        except (TypeError, ValueError):
            return Dispersion()
