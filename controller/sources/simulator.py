"""Metrics source over the embedded cluster simulator, shaped like the Prometheus source's observations.

Rates come from counter deltas between two fetches (the first fetch measures from t=0, where every counter
starts at zero), quantiles from histogram bucket deltas interpolated the way PromQL's histogram_quantile does,
gauges as they are now. A pool with no new observations in a histogram reports that quantile as missing
(None), never as zero.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pdscale.controller.core.types import DataState, PoolObservation, Signals
from pdscale.simulator import Cluster, Pool, PoolMetrics
from pdscale.simulator.config import pools_by_name
from pdscale.simulator.histogram import HistogramSnapshot

__all__ = ["SimulatorMetricsSource", "histogram_quantile"]


def histogram_quantile(q: float, bounds: tuple[float, ...], counts: tuple[float, ...]) -> float | None:
    """PromQL histogram_quantile over cumulative bucket counts (len(bounds) + 1, the last is +Inf)."""
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=False):
        if count >= rank:
            width = count - prev_count
            return bound if width <= 0 else prev_bound + (bound - prev_bound) * (rank - prev_count) / width
        prev_bound, prev_count = bound, count
    return bounds[-1] if bounds else None


def _delta(now: HistogramSnapshot, before: HistogramSnapshot | None) -> tuple[tuple[float, ...], float, float]:
    if before is None:
        return now.cumulative_counts, now.sum, now.count
    counts = tuple(a - b for a, b in zip(now.cumulative_counts, before.cumulative_counts, strict=True))
    return counts, now.sum - before.sum, now.count - before.count


@dataclass(frozen=True, slots=True)
class _Mark:
    time_s: float
    metrics: PoolMetrics | None


class SimulatorMetricsSource:
    """MetricsSource reading ``Cluster.pool_metrics`` of the shared simulator (``env.resources['simulator']``)."""

    @staticmethod
    def check_settings(pools: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """``check-config``: the simulator source takes no params."""
        del pools
        if params:
            raise ValueError(f"metrics.params: the simulator source takes no params, got {sorted(params)}")

    def __init__(
        self,
        pools: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        env: object = None,
        *,
        cluster: Cluster | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        resources: Mapping[str, Any] = getattr(env, "resources", {}) or {}
        found = cluster if cluster is not None else resources.get("simulator")
        if not isinstance(found, Cluster):
            raise ValueError("SimulatorMetricsSource needs a simulator Cluster (env.resources['simulator'])")
        if params:
            raise ValueError(f"SimulatorMetricsSource takes no params, got {sorted(params)}")
        self.cluster = found
        self._lock = lock or resources.get("simulator_lock") or threading.RLock()
        self._pools = pools_by_name(pools)
        self._marks: dict[str, _Mark] = {name: _Mark(0.0, None) for name in self._pools}
        self._last: dict[str, PoolObservation] = {}

    def fetch(self, now: float) -> Mapping[str, PoolObservation]:
        """One observation per pool at the simulator's current time (``now`` is the loop's clock)."""
        del now
        out: dict[str, PoolObservation] = {}
        with self._lock:
            t = self.cluster.now_s
            current = {name: self.cluster.pool_metrics(p) for name, p in self._pools.items()}
        for name, m in current.items():
            mark = self._marks[name]
            span = t - mark.time_s
            if span <= 0:
                out[name] = self._last.get(name) or PoolObservation.missing(name, "no simulated time has passed")
                continue
            obs = PoolObservation(
                pool=name, state=DataState.OK, signals=self._signals(m, mark.metrics, span), sample_time_s=t
            )
            self._marks[name] = _Mark(t, m)
            self._last[name] = obs
            out[name] = obs
        return out

    def _signals(self, m: PoolMetrics, before: PoolMetrics | None, span: float) -> Signals:
        def rate(attr: str) -> float:
            prev = float(getattr(before, attr)) if before is not None else 0.0
            return max(0.0, (float(getattr(m, attr)) - prev) / span)

        def quantile_ms(attr: str, q: float) -> float | None:
            snap: HistogramSnapshot = getattr(m, attr)
            counts, _, _ = _delta(snap, getattr(before, attr) if before is not None else None)
            value = histogram_quantile(q, snap.bounds, counts)
            return None if value is None else value * 1000.0

        def mean(attr: str) -> float | None:
            _, total, count = _delta(getattr(m, attr), getattr(before, attr) if before is not None else None)
            return total / count if count > 0 else None

        def mean_ms(attr: str) -> float | None:
            value = mean(attr)
            return None if value is None else value * 1000.0

        def tokens_p90(attr: str, q: float = 0.9) -> float | None:
            snap: HistogramSnapshot = getattr(m, attr)
            counts, _, _ = _delta(snap, getattr(before, attr) if before is not None else None)
            return histogram_quantile(q, snap.bounds, counts)

        busy = rate("busy_s_total")
        serving = rate("serving_s_total")
        utilisation = min(1.0, busy / serving) if serving > 0 else None
        # Prefill batches: tokens per batch from vLLM's iteration histogram, the batch time exactly (busy time /
        # batches run): both are means over the same batches.
        batch_tokens = batch_ms = None
        if m.pool is Pool.PREFILL:
            _, tokens, batches = _delta(m.iteration_tokens, before.iteration_tokens if before is not None else None)
            if batches > 0:
                batch_tokens = tokens / batches
                batch_ms = busy * span / batches * 1e3
        return Signals(
            prompt_tokens_per_s=rate("prompt_tokens_total"),
            generation_tokens_per_s=rate("generation_tokens_total"),
            request_rate_per_s=rate("requests_finished_total"),
            arrival_rate_per_s=rate("requests_arrived_total"),
            prompt_arrival_tokens_per_s=rate("prompt_tokens_arrived_total") if m.pool is not Pool.DECODE else None,
            isl_mean_tokens=mean("request_prompt_tokens"),
            isl_p90_tokens=tokens_p90("request_prompt_tokens"),
            isl_p99_tokens=tokens_p90("request_prompt_tokens", 0.99),
            osl_mean_tokens=mean("request_generation_tokens"),
            osl_p90_tokens=tokens_p90("request_generation_tokens"),
            running_requests=float(m.num_requests_running),
            waiting_requests=float(m.num_requests_waiting),
            kv_usage_ratio=m.kv_cache_usage_perc if m.kv_tokens_capacity else None,
            kv_tokens_in_use=float(m.kv_tokens_in_use),
            ttft_mean_ms=mean_ms("ttft_seconds"),
            ttft_p50_ms=quantile_ms("ttft_seconds", 0.5),
            ttft_p99_ms=quantile_ms("ttft_seconds", 0.99),
            itl_mean_ms=mean_ms("itl_seconds"),
            itl_p50_ms=quantile_ms("itl_seconds", 0.5),
            itl_p99_ms=quantile_ms("itl_seconds", 0.99),
            ready_replicas=float(m.ready_replicas),
            prefill_utilization=utilisation if m.pool is not Pool.DECODE else None,
            # The compute-busy share, as for prefill; the KV share is kv_usage_ratio, never "utilisation".
            decode_utilization=utilisation if m.pool is not Pool.PREFILL else None,
            prefill_batch_tokens_mean=batch_tokens,
            prefill_batch_ms_mean=batch_ms,
        )

    def close(self) -> None:
        """Nothing to release."""
        return
