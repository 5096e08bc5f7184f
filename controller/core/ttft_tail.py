"""The TTFT quantile of a prefill pool: queueing delay *plus the prompt's own prefill*, over the prompt-length mix.

The SLO grades each request's TTFT, so its p99 is a quantile of ``W + S(L)``: the wait ``W`` (M/G/c tail,
``P(W > x) = C exp(-theta x)``, ``core.queueing``) and the service ``S(L)`` of the request's own prompt length
``L`` (prefill alone plus the KV transfer). Adding the wait's p99 to a p90 prompt's service, as a single number,
is right only when one of the two dominates; where the long prompts' service is most of the target (a tight TTFT,
or hardware whose prefill slows past a knee) it misses the long prompts that fill the tail. Here

    P(TTFT > t)  =  E_L[ 1 if S(L) >= t else C exp(-theta (t - S(L))) ]

is evaluated over the log-normal fitted to the observed prompt mean and p90 (``core.queueing.lognormal_sigma``), on
quantile nodes dense in the upper tail, and solved for ``t`` by bisection. Prompts whose service alone exceeds the
target are left out (no fleet serves them in time; ``policies.feasibility`` reports them), so they do not buy
replicas. Pure math, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from statistics import NormalDist

from pdscale.controller.core.queueing import lognormal_sigma

__all__ = ["prompt_nodes", "ttft_quantile_ms"]

_Z90 = 1.2815515655446004
_Z99 = 2.3263478740408408
_N = NormalDist()


def _grid() -> tuple[tuple[float, float], ...]:
    """``(u, weight)`` nodes on [0, 1]: 16 even ones up to 0.9, then 48 log-spaced in 1 - u down to 1e-5 (the
    p99 is read to a few percent of its prompt length)."""
    edges = [0.9 * i / 16 for i in range(17)]
    edges += [1.0 - 0.1 * 10 ** (-4.0 * i / 48) for i in range(1, 49)]
    edges.append(1.0)
    out = []
    for lo, hi in pairwise(edges):
        mid = (lo + hi) / 2 if hi < 1.0 else (lo + 1.0) / 2
        out.append((min(mid, 1.0 - 1e-7), hi - lo))
    return tuple(out)


_GRID = _grid()


def prompt_nodes(mean: float, p90: float | None, p99: float | None = None) -> tuple[tuple[float, float], ...]:
    """``(prompt tokens, probability)`` nodes of the prompt-length mix: the log-normal with this mean and p90 (a
    point mass without p90); with the observed p99, the upper tail follows it instead (log-linear in the normal
    score from p90 to p99, and on with that slope): traces cut at a context limit have a lighter tail than the
    log-normal the mean and p90 imply, heavy-tailed ones a heavier one."""
    if mean <= 0.0:
        return ((1.0, 1.0),)
    if p90 is None or p90 <= mean:
        return ((mean, 1.0),)
    s = lognormal_sigma(mean, p90)
    if s is None:  # a heavier tail than any log-normal with this mean: the heaviest one (as lognormal_exceedance)
        s = _Z90
    if s == 0.0:
        return ((mean, 1.0),)
    mu = math.log(mean) - s * s / 2.0
    out = []
    tail_slope = None
    if p99 is not None and p99 > p90:
        tail_slope = math.log(p99 / p90) / (_Z99 - _Z90)
    for u, w in _GRID:
        z = _N.inv_cdf(u)
        if tail_slope is not None and z > _Z90:
            out.append((p90 * math.exp(tail_slope * (z - _Z90)), w))
        else:
            out.append((math.exp(mu + s * z), w))
    return tuple(out)


def ttft_quantile_ms(
    quantile: float,
    wait_prob: float,
    theta_per_s: float,
    service_ms: Callable[[float], float],
    nodes: tuple[tuple[float, float], ...],
    target_ms: float,
) -> float:
    """The ``quantile`` of wait + own service over the prompt nodes, feasible prompts only (see the module).

    ``wait_prob`` is the probability of waiting (Erlang C), ``theta_per_s`` the decay rate of the wait's tail
    (``inf`` for no wait); ``service_ms(L)`` a prompt's prefill + transfer.
    """
    pts = [(service_ms(length), w) for length, w in nodes]
    feasible = [(sv, w) for sv, w in pts if sv <= target_ms]
    if feasible:
        pts = feasible
    total = sum(w for _, w in pts)
    tail = (1.0 - quantile) * total
    theta_ms = theta_per_s / 1e3

    def exceed(t: float) -> float:
        p = 0.0
        for sv, w in pts:
            if sv >= t:
                p += w
            elif wait_prob > 0.0 and math.isfinite(theta_ms):
                p += w * min(1.0, wait_prob * math.exp(-theta_ms * (t - sv)))
        return p

    lo = min(sv for sv, _ in pts)
    hi = max(sv for sv, _ in pts) + 1.0
    if wait_prob > 0.0 and math.isfinite(theta_ms) and theta_ms > 0.0 and wait_prob > 1.0 - quantile:
        hi += math.log(wait_prob / (1.0 - quantile)) / theta_ms
    if exceed(lo) <= tail:
        return lo
    for _ in range(40):
        mid = (lo + hi) / 2.0
        if exceed(mid) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 0.5:
            break
    return hi
