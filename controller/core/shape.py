"""Learning the hardware's decode shape online: how the step time departs from the profile *as the batch grows*.

One calibration factor per phase (``core.calibration``) fixes the level of the profile. Real stacks also differ
in slope: a modern batching engine's decode step grows more slowly with the batch than the profile says (or a
tensor-parallel degree scales differently), so a factor measured at the batch the fleet runs today is wrong at
the batch the capacity model sizes for tomorrow. This module fits, from live ticks, the log-linear law

    observed step / profile step  =  exp(a + b * ln(batch))

by exponentially weighted least squares over ``(ln batch, ln ratio)`` points, one per decode pool and tick (the
batch from Little's law, the step from the token-weighted mean ITL: the same exact interval statistics the
scalar calibration uses). Robust and bounded:

- points are trusted only with a spread of batches (``min_spread`` in ln batch) and ``min_points`` of weight;
  until then :meth:`DecodeShape.factor` is None and the policy keeps the scalar factor. The slope is a property of
  the hardware, the spread one of the traffic: once fitted, the slope is kept while a long steady stretch narrows
  the batches the fit still remembers (their level still moves the intercept). Dropping it there sent
  ``retail-day-tp8-scaling`` back to the scalar factor in mid-afternoon, which sized decode for 143 sequences a
  replica where the learned law allows 100, and the scale-down to 2 replicas missed 12 % of the next half hour;
- ratios are clamped to [1/4, 4] before fitting, and once the fit is trusted a point whose residual exceeds
  ``outlier_k`` x the fit's RMS residual (at least 0.15 in ln) is dropped (a scrape glitch, a node drained
  mid-interval);
- the slope is bounded to ``+-max_slope`` and the factor at any batch to ``[min_factor, max_factor]``: a bounded
  departure from the profile, never a replacement of it;
- old points fade with ``half_life_s`` so the fit follows an engine upgrade.

Dynamo 1.6.1's planner refits its forward-pass model on observed metrics in the same spirit; WVA tracks its
model's parameters with a Kalman filter. Pure: no I/O, no clock (callers pass ``now_s``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DecodeShape", "ShapeSettings"]

_LN4 = math.log(4.0)


@dataclass(frozen=True, slots=True)
class ShapeSettings:
    """How much evidence the fit needs and how far it may move from the profile."""

    half_life_s: float = 6 * 3600.0
    min_points: float = 20.0
    min_spread: float = 0.25
    """Weighted standard deviation of ln(batch) needed to trust a slope (0.25: batches ~+-30% around their mean)."""
    max_slope: float = 0.7
    min_factor: float = 0.5
    max_factor: float = 2.0
    outlier_k: float = 4.0


@dataclass(frozen=True, slots=True)
class DecodeShape:
    """Exponentially weighted sums of the (ln batch, ln ratio) points seen; round-trips through plain dicts."""

    w: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0
    updated_s: float | None = None
    x_min: float | None = None
    x_max: float | None = None
    rejected: int = 0
    slope: float | None = None
    """The slope last fitted with enough spread of batches (None until then): kept while the spread narrows."""

    # -- the fit --------------------------------------------------------------------------------------
    def _moments(self) -> tuple[float, float, float, float, float] | None:
        if self.w <= 0.0:
            return None
        mx, my = self.sx / self.w, self.sy / self.w
        vxx = max(0.0, self.sxx / self.w - mx * mx)
        vxy = self.sxy / self.w - mx * my
        vyy = max(0.0, self.syy / self.w - my * my)
        return mx, my, vxx, vxy, vyy

    def _fitted_slope(self, s: ShapeSettings) -> float | None:
        """The slope the points fit (bounded), None without enough weight and spread of batches."""
        m = self._moments()
        if m is None or self.w < s.min_points or math.sqrt(m[2]) < s.min_spread:
            return None
        return max(-s.max_slope, min(s.max_slope, m[3] / m[2]))

    def slope_is_kept(self, s: ShapeSettings) -> bool:
        """Whether the fit uses the slope kept from a wider spread of batches (the points alone no longer fix it)."""
        return self._fitted_slope(s) is None and self.slope is not None and self.w >= s.min_points

    def trusted(self, s: ShapeSettings) -> bool:
        """Enough weight, and a slope: fitted from a spread of batches now, or kept from one."""
        return self.coefficients(s) is not None

    def coefficients(self, s: ShapeSettings) -> tuple[float, float] | None:
        """``(a, b)`` of ``ln ratio = a + b ln batch``, slope bounded; None until trusted."""
        m = self._moments()
        if m is None or self.w < s.min_points:
            return None
        b = self._fitted_slope(s)
        if b is None:
            if self.slope is None:
                return None
            b = max(-s.max_slope, min(s.max_slope, self.slope))
        return m[1] - b * m[0], b

    def rms_residual(self, s: ShapeSettings) -> float | None:
        """Weighted RMS residual of the fit in ln ratio (None until trusted)."""
        m, c = self._moments(), self.coefficients(s)
        if m is None or c is None:
            return None
        _, _, vxx, vxy, vyy = m
        b = c[1]
        return math.sqrt(max(0.0, vyy - 2 * b * vxy + b * b * vxx))

    def factor(self, batch: float, s: ShapeSettings) -> float | None:
        """observed / profile step time at ``batch`` (bounded), or None until the fit is trusted."""
        c = self.coefficients(s)
        if c is None:
            return None
        a, b = c
        return max(s.min_factor, min(s.max_factor, math.exp(a + b * math.log(max(1.0, batch)))))

    # -- updates --------------------------------------------------------------------------------------
    def observe(self, now_s: float, batch: float, ratio: float, s: ShapeSettings) -> DecodeShape:
        """Fold one (batch, observed / profile step) point in; bad or outlying points are dropped."""
        if not (math.isfinite(batch) and math.isfinite(ratio) and batch >= 1.0 and ratio > 0.0):
            return self
        x = math.log(batch)
        y = max(-_LN4, min(_LN4, math.log(ratio)))
        c, rms = self.coefficients(s), self.rms_residual(s)
        if c is not None and rms is not None and abs(y - (c[0] + c[1] * x)) > s.outlier_k * max(0.15, rms):
            return replace(self, rejected=self.rejected + 1)
        decay = 1.0
        if self.updated_s is not None and now_s > self.updated_s:
            decay = 0.5 ** ((now_s - self.updated_s) / s.half_life_s)
        new = DecodeShape(
            w=self.w * decay + 1.0,
            sx=self.sx * decay + x,
            sy=self.sy * decay + y,
            sxx=self.sxx * decay + x * x,
            sxy=self.sxy * decay + x * y,
            syy=self.syy * decay + y * y,
            updated_s=now_s,
            x_min=x if self.x_min is None else min(self.x_min, x),
            x_max=x if self.x_max is None else max(self.x_max, x),
            rejected=self.rejected,
            slope=self.slope,
        )
        fitted = new._fitted_slope(s)
        return new if fitted is None else replace(new, slope=fitted)

    def describe(self, s: ShapeSettings) -> str:
        """One line for reasons and ``admin explain``."""
        c = self.coefficients(s)
        if c is None:
            return f"decode shape: profile's slope ({self.w:.0f} points, not enough spread of batches yet)"
        lo = math.exp(self.x_min or 0.0)
        hi = math.exp(self.x_max or 0.0)
        kept = ", slope kept: recent batches too alike to refit it" if self.slope_is_kept(s) else ""
        return (
            f"decode shape learned: step x{math.exp(c[0]):.2f} x batch^{c[1]:+.2f} of the profile's "
            f"({self.w:.0f} points, batches {lo:.0f}-{hi:.0f}{kept})"
        )

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for ``Proposal.state``."""
        return {
            "w": self.w,
            "sx": self.sx,
            "sy": self.sy,
            "sxx": self.sxx,
            "sxy": self.sxy,
            "syy": self.syy,
            "updated_s": self.updated_s,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "rejected": self.rejected,
            "slope": self.slope,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> DecodeShape:
        """Parse ``to_dict`` output; anything malformed or non-finite starts fresh."""
        if not isinstance(data, Mapping) or not data:
            return DecodeShape()
        try:
            nums = {k: float(data.get(k, 0.0)) for k in ("w", "sx", "sy", "sxx", "sxy", "syy")}
            opt = {
                k: (None if data.get(k) is None else float(data[k])) for k in ("updated_s", "x_min", "x_max", "slope")
            }
            rejected = int(data.get("rejected", 0))
        except (TypeError, ValueError):
            return DecodeShape()
        if not all(math.isfinite(v) for v in nums.values()) or nums["w"] < 0.0:
            return DecodeShape()
        if any(v is not None and not math.isfinite(v) for v in opt.values()):
            return DecodeShape()
        return DecodeShape(
            w=nums["w"],
            sx=nums["sx"],
            sy=nums["sy"],
            sxx=nums["sxx"],
            sxy=nums["sxy"],
            syy=nums["syy"],
            updated_s=opt["updated_s"],
            x_min=opt["x_min"],
            x_max=opt["x_max"],
            rejected=rejected,
            slope=opt["slope"],
        )
