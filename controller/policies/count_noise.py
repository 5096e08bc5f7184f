"""Low-count arrivals: a prefill pool's rate pooled over the ticks that hold enough requests to mean something.

A rate measured over one tick from ``n`` arrivals has a relative standard error of ``1/sqrt(n)`` (Poisson
counting). At 0.35 req/s and 30 s ticks that is ~10 requests, +-31 %: the need the capacity model derives swings
tick to tick (5 to 11 replicas on a flat trace), and the scale-down window then holds the highest of those swings.
The queueing model already charges for Poisson burstiness at the true rate, so sizing on one tick's noisy count
pays for it twice. Below ``MIN_EVENTS`` arrivals per tick, the rate (and the prompt tokens per second, hence the
mean prompt) is the mean over the newest ticks that together hold ``MIN_EVENTS`` (at most ``MAX_TICKS``), unless
the newest tick departs from the earlier ones by more than ``STEP_SIGMAS`` Poisson standard deviations: a real
step, which restarts the pool. A tick with ``MIN_EVENTS`` or more on its own is used as it is, so busy pools
decide exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import Signal
from pdscale.controller.policies.demand import observed_demand

__all__ = ["MAX_TICKS", "MIN_EVENTS", "STEP_SIGMAS", "Pooled", "pooled_rate", "with_pooled"]

MIN_EVENTS = 100.0
"""Arrivals that give a rate within ~10 % (one standard error)."""
STEP_SIGMAS = 3.0
"""How far (Poisson standard deviations of one tick's count) the newest tick may depart before it is a step."""
MAX_TICKS = 20
"""The most ticks pooled (10 minutes at 30 s ticks)."""


@dataclass(frozen=True, slots=True)
class Pooled:
    """The pooled rate of a low-count pool."""

    rate_per_s: float
    prefill_tps: float | None
    ticks: int
    events: float

    def note(self) -> str:
        """The reason's words for it."""
        return f"{self.rate_per_s:.3g} req/s pooled over {self.ticks} ticks ({self.events:.0f} arrivals)"


def _rows(past: Any, now_s: float, horizon_s: float) -> list[tuple[float, float, float]]:
    out: list[tuple[float, float, float]] = []
    for row in past if isinstance(past, list) else []:
        if isinstance(row, Sequence) and len(row) == 3 and all(isinstance(x, (int, float)) for x in row):
            t, r, p = float(row[0]), float(row[1]), float(row[2])
            if now_s - horizon_s <= t < now_s and math.isfinite(r) and r >= 0.0 and math.isfinite(p):
                out.append((t, r, p))
    return out


def pooled_rate(ctx: PolicyContext, pool: str, past: Any) -> tuple[Pooled | None, list[list[float]]]:
    """The pooled rate (None: use this tick's) and the history to keep in the policy's state."""
    now = observed_demand(ctx, pool)
    rows = _rows(past, ctx.now_s, MAX_TICKS * ctx.tick_s)
    rate = now.get(Signal.REQUEST_RATE)
    if rate is None or ctx.tick_s <= 0.0:
        return None, [list(r) for r in rows]
    tps = now.get(Signal.PREFILL_TPS)
    new = (ctx.now_s, rate, -1.0 if tps is None else tps)
    events_now = rate * ctx.tick_s
    if events_now >= MIN_EVENTS or not rows:
        return None, [list(new)]
    taken: list[tuple[float, float, float]] = []
    events = events_now
    for row in reversed(rows):
        if events >= MIN_EVENTS:
            break
        taken.append(row)
        events += row[1] * ctx.tick_s
    mu = sum(r for _, r, _ in taken) / len(taken) * ctx.tick_s
    if abs(events_now - mu) > STEP_SIGMAS * math.sqrt(max(mu, 1.0)):
        return None, [list(new)]  # a step: the earlier ticks no longer describe the pool
    used = [new, *taken]
    mean_rate = sum(r for _, r, _ in used) / len(used)
    tokens = [p for _, _, p in used]
    mean_tps = sum(tokens) / len(tokens) if all(p >= 0.0 for p in tokens) else None
    keep = [list(r) for r in rows] + [list(new)]
    return Pooled(mean_rate, mean_tps, len(used), events), keep


def with_pooled(demand: Mapping[Signal, float], w: Workload, pooled: Pooled) -> tuple[dict[Signal, float], Workload]:
    """The demand with the pooled rate (and prompt tokens/s), and the workload with the pooled mean prompt."""
    out = dict(demand)
    out[Signal.REQUEST_RATE] = pooled.rate_per_s
    if pooled.prefill_tps is not None and Signal.PREFILL_TPS in out:
        out[Signal.PREFILL_TPS] = pooled.prefill_tps
    if pooled.prefill_tps and pooled.rate_per_s > 0.0:
        w = replace(w, isl_mean_tokens=pooled.prefill_tps / pooled.rate_per_s)
    return out, w
