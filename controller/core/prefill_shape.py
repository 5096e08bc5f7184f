"""Learning the hardware's prefill shape online: how a prefill batch's time departs from the profile *as the
batch's tokens grow*.

One calibration factor (``core.calibration``) fixes the level of the profile at the load the fleet runs now.
Real stacks differ in shape: past a compute knee (chunked prefill with a small chunk re-reading the weights and
the growing KV of earlier chunks, a GEMM tiling that stops scaling, attention's quadratic term at another
efficiency) per-token throughput falls, so a factor measured on the small batches of a quiet hour is wrong for
the full batches the capacity model sizes a peak for, and wrong again for one long prompt alone (the TTFT tail).
This module fits, from live ticks, how the ratio *observed batch time / profile batch time* depends on the
batch's tokens ``T``, as a hinge in ln T:

    ln ratio  =  a + b * max(0, ln T - ln k)

for each candidate knee ``k`` on a powers-of-two grid (256 ... 32768 tokens; the smallest one below the data is
the plain log-linear law ``a + b ln T``); the knee whose fit leaves the smallest weighted squared residual wins.
A hinge says "as profiled up to k tokens, then a growing departure", which is the shape a compute knee or an
attention term at another efficiency has; the profile keeps its own quadratic attention term, the fit corrects
its level per batch size (one long prompt alone is a batch of T = its length, so long prompts are read from the
same law).

One point per prefill pool and tick, from exact interval statistics: mean tokens per batch (vLLM's
``vllm:iteration_tokens_total`` sum / count) and mean batch time (the simulator: busy time / batches; vLLM: the mean
of ``vllm:request_prefill_time_seconds``), against the profile's time for a batch of that many tokens in prompts
of the observed mean length. Robust and bounded as the decode shape (``core.shape``):

- trusted only with ``min_points`` of weight and a spread of batch sizes (``min_spread`` in ln T); until then
  :meth:`PrefillShape.factor` is None and the policy keeps the scalar factor (the profile's shape);
- ratios clamped to [1/4, 4]; once trusted, a point whose residual exceeds ``outlier_k`` x the fit's RMS residual
  (at least 0.15 in ln) is dropped;
- the slope is bounded to ``+-max_slope``, the factor to ``[min_factor, max_factor]``, and the law is never
  extrapolated past the batch sizes seen (it is read at the nearest edge);
- old points fade with ``half_life_s``.

Pure: no I/O, no clock (callers pass ``now_s``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["KNEES_TOKENS", "PrefillShape", "PrefillShapeSettings"]

KNEES_TOKENS: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
"""Candidate knees: powers of two, the sizes engines' token budgets and chunks come in."""

_LN4 = math.log(4.0)
_LN_KNEES = tuple(math.log(k) for k in KNEES_TOKENS)


@dataclass(frozen=True, slots=True)
class PrefillShapeSettings:
    """How much evidence the fit needs and how far it may move from the profile."""

    half_life_s: float = 6 * 3600.0
    min_points: float = 20.0
    min_spread: float = 0.25
    """Weighted standard deviation of ln(batch tokens) needed to trust a shape (0.25: ~+-30% around the mean)."""
    max_slope: float = 1.0
    min_factor: float = 0.5
    max_factor: float = 2.0
    outlier_k: float = 4.0


def _hinge(x: float, ln_knee: float) -> float:
    return max(0.0, x - ln_knee)


@dataclass(frozen=True, slots=True)
class PrefillShape:
    """Exponentially weighted sums of the (ln T, ln ratio) points, per candidate knee; round-trips through dicts.

    ``sh[i]``, ``shh[i]``, ``shy[i]``: sums of h, h^2 and h*y with ``h = max(0, ln T - ln KNEES_TOKENS[i])``.
    """

    w: float = 0.0
    sx: float = 0.0
    sxx: float = 0.0
    sy: float = 0.0
    syy: float = 0.0
    sh: tuple[float, ...] = (0.0,) * len(KNEES_TOKENS)
    shh: tuple[float, ...] = (0.0,) * len(KNEES_TOKENS)
    shy: tuple[float, ...] = (0.0,) * len(KNEES_TOKENS)
    updated_s: float | None = None
    x_min: float | None = None
    x_max: float | None = None
    rejected: int = 0

    # -- the fit --------------------------------------------------------------------------------------
    def trusted(self, s: PrefillShapeSettings) -> bool:
        """Enough weight and enough spread of batch sizes to trust a shape."""
        if self.w < s.min_points or self.w <= 0.0:
            return False
        mx = self.sx / self.w
        return math.sqrt(max(0.0, self.sxx / self.w - mx * mx)) >= s.min_spread

    def _fit(self, i: int, s: PrefillShapeSettings) -> tuple[float, float, float]:
        """``(a, b, weighted mean squared residual)`` of the hinge at knee ``i`` (slope bounded)."""
        mh, my = self.sh[i] / self.w, self.sy / self.w
        vhh = max(0.0, self.shh[i] / self.w - mh * mh)
        vhy = self.shy[i] / self.w - mh * my
        vyy = max(0.0, self.syy / self.w - my * my)
        b = 0.0 if vhh < 1e-9 else max(-s.max_slope, min(s.max_slope, vhy / vhh))
        return my - b * mh, b, max(0.0, vyy - 2.0 * b * vhy + b * b * vhh)

    def law(self, s: PrefillShapeSettings) -> tuple[int, float, float, float] | None:
        """``(knee tokens, a, b, rms residual)`` of the best-fitting hinge; None until trusted."""
        if not self.trusted(s):
            return None
        best: tuple[int, float, float, float] | None = None
        for i, knee in enumerate(KNEES_TOKENS):
            a, b, mse = self._fit(i, s)
            if best is None or mse < best[3] ** 2 - 1e-12:
                best = (knee, a, b, math.sqrt(mse))
        return best

    def factor(self, batch_tokens: float, s: PrefillShapeSettings) -> float | None:
        """observed / profile prefill time of a batch of ``batch_tokens`` (bounded), or None until trusted."""
        fit = self.law(s)
        if fit is None or self.x_min is None or self.x_max is None:
            return None
        knee, a, b, _ = fit
        x = min(self.x_max, max(self.x_min, math.log(max(1.0, batch_tokens))))
        return max(s.min_factor, min(s.max_factor, math.exp(a + b * _hinge(x, math.log(knee)))))

    # -- updates --------------------------------------------------------------------------------------
    def observe(self, now_s: float, batch_tokens: float, ratio: float, s: PrefillShapeSettings) -> PrefillShape:
        """Fold one (mean batch tokens, observed / profile batch time) point in; bad or outlying points are dropped."""
        if not (math.isfinite(batch_tokens) and math.isfinite(ratio) and batch_tokens >= 1.0 and ratio > 0.0):
            return self
        x = math.log(batch_tokens)
        y = max(-_LN4, min(_LN4, math.log(ratio)))
        fit = self.law(s)
        if fit is not None:
            knee, a, b, rms = fit
            if abs(y - (a + b * _hinge(x, math.log(knee)))) > s.outlier_k * max(0.15, rms):
                return replace(self, rejected=self.rejected + 1)
        d = 1.0
        if self.updated_s is not None and now_s > self.updated_s:
            d = 0.5 ** ((now_s - self.updated_s) / s.half_life_s)
        hs = tuple(_hinge(x, k) for k in _LN_KNEES)
        return PrefillShape(
            w=self.w * d + 1.0,
            sx=self.sx * d + x,
            sxx=self.sxx * d + x * x,
            sy=self.sy * d + y,
            syy=self.syy * d + y * y,
            sh=tuple(v * d + h for v, h in zip(self.sh, hs, strict=True)),
            shh=tuple(v * d + h * h for v, h in zip(self.shh, hs, strict=True)),
            shy=tuple(v * d + h * y for v, h in zip(self.shy, hs, strict=True)),
            updated_s=now_s,
            x_min=x if self.x_min is None else min(self.x_min, x),
            x_max=x if self.x_max is None else max(self.x_max, x),
            rejected=self.rejected,
        )

    def describe(self, s: PrefillShapeSettings) -> str:
        """One line for reasons and ``admin explain``."""
        fit = self.law(s)
        if fit is None or self.x_min is None or self.x_max is None:
            return f"prefill shape: the profile's ({self.w:.0f} points, not enough spread of batch sizes yet)"
        knee, _, b, _ = fit
        lo, hi = math.exp(self.x_min), math.exp(self.x_max)
        at_lo, at_hi = self.factor(lo, s) or 1.0, self.factor(hi, s) or 1.0
        where = f"knee {knee} tok" if knee > lo else "no knee in range"
        return (
            f"prefill shape learned: batch time x{at_lo:.2f} at {lo:.0f} tok .. x{at_hi:.2f} at {hi:.0f} tok of the "
            f"profile's ({where}, slope {b:+.2f} per ln T, {self.w:.0f} points)"
        )

    # -- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for ``Proposal.state``."""
        return {
            "w": self.w,
            "sx": self.sx,
            "sxx": self.sxx,
            "sy": self.sy,
            "syy": self.syy,
            "sh": list(self.sh),
            "shh": list(self.shh),
            "shy": list(self.shy),
            "updated_s": self.updated_s,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "rejected": self.rejected,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> PrefillShape:
        """Parse ``to_dict`` output; anything malformed or non-finite starts fresh."""
        if not isinstance(data, Mapping) or not data:
            return PrefillShape()
        n = len(KNEES_TOKENS)
        try:
            nums = {k: float(data.get(k, 0.0)) for k in ("w", "sx", "sxx", "sy", "syy")}
            vecs = {k: tuple(float(v) for v in data.get(k) or ()) for k in ("sh", "shh", "shy")}
            opt = {k: (None if data.get(k) is None else float(data[k])) for k in ("updated_s", "x_min", "x_max")}
            rejected = int(data.get("rejected", 0))
        except (TypeError, ValueError):
            return PrefillShape()
        values = [*nums.values(), *(v for vec in vecs.values() for v in vec)]
        values += [v for v in opt.values() if v is not None]
        if not all(math.isfinite(v) for v in values) or nums["w"] < 0.0 or any(len(v) != n for v in vecs.values()):
            return PrefillShape()
        return PrefillShape(
            w=nums["w"],
            sx=nums["sx"],
            sxx=nums["sxx"],
            sy=nums["sy"],
            syy=nums["syy"],
            sh=vecs["sh"],
            shh=vecs["shh"],
            shy=vecs["shy"],
            updated_s=opt["updated_s"],
            x_min=opt["x_min"],
            x_max=opt["x_max"],
            rejected=rejected,
        )
