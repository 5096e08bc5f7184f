"""Reading a pool's demand signals back from Prometheus over past days (range queries), for the seasonal floor.

A daemon that restarts has no yesterday of its own: the seasonal floor (``policies.seasonal``) would start
working a day after the restart. At start-up the daemon asks a source that can (``history``) for each forecast
signal over the last week and a day and backfills the loop's seasonal book with it (``runtime.backfill``).

The queries are the pool's own instant-query templates (preset or ``metrics.params.queries``, same selector and
rate window), evaluated by ``/api/v1/query_range`` at ``step_s``; each signal's value at a time is computed from
those fields exactly as a live tick computes it (``Signals.demand``: arrivals where known, else completions; for
decode concurrency, running plus waiting). A range longer than one day is asked for a day at a time, well under
Prometheus' 11,000 points per series. With ``time_scale`` other than 1 (a simulator's exporter) Prometheus time
is not wall time and nothing is read.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pdscale.controller.core.types import ROLE_SIGNALS, Signal, Signals
from pdscale.controller.sources.promql import SIGNAL_KINDS, SignalKind

if TYPE_CHECKING:
    from pdscale.controller.sources.prometheus import PrometheusMetricsSource

__all__ = ["DEMAND_FIELDS", "HistoryError", "read_history"]

DEMAND_FIELDS: Mapping[Signal, tuple[str, ...]] = {
    Signal.REQUEST_RATE: ("arrival_rate_per_s", "request_rate_per_s"),
    Signal.PREFILL_TPS: ("prompt_arrival_tokens_per_s", "prompt_tokens_per_s"),
    Signal.DECODE_CONCURRENCY: ("generation_tokens_per_s", "itl_mean_ms", "running_requests", "waiting_requests"),
    Signal.KV_TOKENS: ("kv_tokens_in_use",),
}
"""The fields each signal's demand is computed from (``Signals.demand``)."""

_CHUNK_S = 86_400.0


class HistoryError(RuntimeError):
    """A range query failed (unreachable, rejected): the message names the pool, field and query."""


def _scaled(kind: SignalKind, value: float) -> float:
    return value * 1000.0 if kind is SignalKind.LATENCY else value


def _range(
    source: PrometheusMetricsSource, promql: str, start_s: float, end_s: float, step_s: float
) -> dict[float, float]:
    """One field's finite, non-negative values by timestamp, a day per query."""
    if source._client is None:
        source._client = source._build_client()
    out: dict[float, float] = {}
    t = start_s
    while t < end_s:
        stop = min(end_s, t + _CHUNK_S)
        result = source._client.custom_query_range(
            promql,
            start_time=dt.datetime.fromtimestamp(t, dt.UTC),
            end_time=dt.datetime.fromtimestamp(stop, dt.UTC),
            step=f"{step_s:g}s",
            timeout=source.params.timeout_s,
        )
        source._queries_total += 1
        if isinstance(result, list) and len(result) == 1 and isinstance(result[0], dict):
            for ts, raw in result[0].get("values") or []:
                v = float(raw)
                if math.isfinite(v) and v >= 0.0:
                    out[float(ts)] = v
        t = stop + step_s
    return out


def read_history(
    source: PrometheusMetricsSource, pool: str, start_s: float, end_s: float, step_s: float = 60.0
) -> dict[Signal, tuple[list[float], list[float | None]]]:
    """Per forecast signal of ``pool``'s role: (times, values) over ``[start_s, end_s]`` every ``step_s``.

    Empty with ``time_scale`` != 1 or an empty range; raises :class:`HistoryError` when a query fails.
    """
    c = source._pools.get(pool)
    if c is None or source.params.time_scale != 1.0 or end_s <= start_s or step_s <= 0.0:
        return {}
    signals = ROLE_SIGNALS[c.role]
    fields = sorted({f for s in signals for f in DEMAND_FIELDS.get(s, ()) if c.queries.get(f)})
    series: dict[str, dict[float, float]] = {}
    for name in fields:
        promql = c.queries[name][0]
        try:
            series[name] = _range(source, promql, start_s, end_s, step_s)
        except Exception as exc:
            raise HistoryError(
                f"{pool}: range query for {name} failed ({type(exc).__name__}: {exc}): {promql}"
            ) from exc
    times = sorted({t for values in series.values() for t in values})
    out: dict[Signal, tuple[list[float], list[float | None]]] = {}
    rows: list[Signals] = []
    for t in times:
        values: dict[str, Any] = {n: _scaled(SIGNAL_KINDS[n], s[t]) for n, s in series.items() if t in s}
        rows.append(Signals(**values))
    for sig in signals:
        out[sig] = (list(times), [row.demand(sig) for row in rows])
    return out
