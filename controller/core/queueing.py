"""Queueing approximations for sizing a pool for a latency quantile (pure math, no I/O).

M/G/c with the Erlang-C probability of waiting, the Allen-Cunneen correction for arrival and service
variability, and the exponential tail of the waiting time:

    P(W > t) ~= C(c, a) * exp(-(c*mu - lambda) * t / k),   k = (ca^2 + cs^2) / 2

so the waiting-time quantile is ``w_q = k / (c*mu - lambda) * ln(C / (1 - q))`` when ``C > 1 - q``, else 0.
For Poisson arrivals and exponential service (k = 1) this is exact for M/M/c.
"""

from __future__ import annotations

import math

__all__ = [
    "erlang_c",
    "lognormal_cv2",
    "lognormal_exceedance",
    "lognormal_sigma",
    "mgc_wait_mean_s",
    "mgc_wait_quantile_s",
]


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with ``servers`` and ``offered_load`` = lambda/mu.

    Returns 1.0 when the queue is unstable (load >= servers). Uses the stable Erlang-B recursion.
    """
    if offered_load <= 0.0:
        return 0.0
    if servers < 1 or offered_load >= servers:
        return 1.0
    b = 1.0
    for k in range(1, servers + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / servers
    return b / (1.0 - rho * (1.0 - b))


def _variability(arrival_cv2: float, service_cv2: float) -> float:
    return max(0.0, (arrival_cv2 + service_cv2) / 2.0)


def mgc_wait_mean_s(
    servers: int, arrival_rate_per_s: float, service_rate_per_s: float, arrival_cv2: float, service_cv2: float
) -> float:
    """Mean queueing delay (Allen-Cunneen); ``inf`` when unstable."""
    if arrival_rate_per_s <= 0.0:
        return 0.0
    slack = servers * service_rate_per_s - arrival_rate_per_s
    if slack <= 0.0:
        return math.inf
    c = erlang_c(servers, arrival_rate_per_s / service_rate_per_s)
    return c * _variability(arrival_cv2, service_cv2) / slack


def mgc_wait_quantile_s(
    servers: int,
    arrival_rate_per_s: float,
    service_rate_per_s: float,
    quantile: float,
    arrival_cv2: float = 1.0,
    service_cv2: float = 1.0,
) -> float:
    """The ``quantile`` of the queueing delay in seconds (exponential tail approximation); ``inf`` when unstable."""
    if arrival_rate_per_s <= 0.0:
        return 0.0
    slack = servers * service_rate_per_s - arrival_rate_per_s
    if slack <= 0.0:
        return math.inf
    c = erlang_c(servers, arrival_rate_per_s / service_rate_per_s)
    tail = 1.0 - quantile
    if c <= tail:
        return 0.0
    return _variability(arrival_cv2, service_cv2) / slack * math.log(c / tail)


_Z90 = 1.2815515655446004
"""The standard normal's 90th percentile."""


def lognormal_sigma(mean: float, p90: float) -> float | None:
    """The log-space sigma of a log-normal with this mean and 90th percentile (None if no log-normal fits)."""
    if not (mean > 0.0 and p90 > 0.0):
        return None
    # mean = exp(mu + s^2/2), p90 = exp(mu + z s)  =>  s^2/2 - z s + ln(p90/mean) = 0
    disc = _Z90 * _Z90 - 2.0 * math.log(p90 / mean)
    if disc < 0.0:
        return None
    return max(0.0, _Z90 - math.sqrt(disc))


def lognormal_cv2(mean: float, p90: float) -> float:
    """Squared coefficient of variation of a log-normal with this mean and 90th percentile (1.0 if undefined)."""
    s = lognormal_sigma(mean, p90)
    if s is None:
        return 1.0
    return math.expm1(s * s)


def lognormal_exceedance(mean: float, p90: float, x: float) -> float:
    """P(X > x) for the log-normal with this mean and 90th percentile (0 or 1 for a point mass at the mean).

    A p90 above ``exp(z90^2 / 2)`` (~2.27) times the mean is a heavier tail than any log-normal with that mean
    has: the tail is then the heaviest log-normal with that mean (sigma = z90), which understates the mass far
    out rather than inventing it, and never reads a heavy tail as none (a point mass would).
    """
    if x <= 0.0:
        return 1.0
    s = lognormal_sigma(mean, p90)
    if s is None and mean > 0.0 and p90 > mean:
        s, mu = _Z90, math.log(mean) - _Z90 * _Z90 / 2.0
    elif s is None or s == 0.0:
        return 1.0 if x < mean else 0.0
    else:
        mu = math.log(mean) - s * s / 2.0
    return 0.5 * math.erfc((math.log(x) - mu) / (s * math.sqrt(2.0)))
