"""Start-up backfill of the seasonal floor's history from a metrics source that can read the past.

A restarted daemon has no yesterday of its own, so without this the seasonal floor (``policies.seasonal``)
starts working a day after every restart. At start-up, when the source has a ``history(pool, start_s, end_s,
step_s)`` method (Prometheus range queries, ``sources.prometheus_history``), the last ``forecasting.backfill_days``
of each forecast signal are fed into the loop's seasonal book. A source without it, or a failed read, changes
nothing but a log line: the floor then fills from live ticks as before.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["backfill_seasonal"]

log = structlog.get_logger(__name__)

DAY_S = 86_400.0


def backfill_seasonal(rec: Any, now_s: float, days: float, step_s: float = 60.0) -> dict[str, int]:
    """Feed ``rec.seasonal`` from ``rec.source.history`` over the last ``days``; returns finite points per pool."""
    history = getattr(rec.source, "history", None)
    if days <= 0.0 or not callable(history):
        return {}
    start_s = now_s - days * DAY_S
    counts: dict[str, int] = {}
    for pool in rec.pools:
        try:
            got = history(pool, start_s, now_s, step_s)
        except Exception as exc:
            log.warning("seasonal_backfill_failed", pool=pool, days=days, error=f"{type(exc).__name__}: {exc}")
            continue
        counts[pool] = sum(rec.seasonal.backfill(pool, sig, times, values) for sig, (times, values) in got.items())
    if counts:
        log.info("seasonal_backfilled", days=days, step_s=step_s, points=counts)
    return counts
