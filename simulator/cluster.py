"""Public API of the cluster simulator: the controller-facing surface over the event-driven engine.

Example::

    cluster = Cluster(ClusterConfig(perf=load_perf_model(), prefill_replicas=4, decode_replicas=8), trace)
    cluster.advance_to(60.0)
    cluster.set_target(Pool.DECODE, 10)       # starts 2 replicas (cold start), or cancels/drains on the way down
    cluster.flip_role("prefill-0", Pool.DECODE)  # drain, wait flip_delay_s, serve decode
    metrics = cluster.pool_metrics(Pool.DECODE)
    result = cluster.finish()                # runs every request to completion or drop
"""

from __future__ import annotations

import math
import time

import structlog

from pdscale.simulator.config import ClusterConfig, Pool, ReplicaState, TraceLike
from pdscale.simulator.engine import Engine
from pdscale.simulator.metrics import PoolMetrics
from pdscale.simulator.replica import Activity, Replica, ReplicaView
from pdscale.simulator.results import SimResult, build_result

__all__ = ["Cluster"]

log = structlog.get_logger(__name__)


class Cluster(Engine):
    """A simulated serving cluster replaying `trace`, resizable while it runs.

    Time only moves forward through `advance_to` and `finish`. Scale-down cancels starting replicas
    first (newest first), then drains the least-loaded ready ones; a draining replica takes no new work
    and stops when what it holds is done. Every starting, ready or draining replica is paid for.
    """

    def __init__(self, config: ClusterConfig, trace: TraceLike) -> None:
        self._wall_start = time.perf_counter()
        super().__init__(config, trace)
        initial = {
            Pool.PREFILL: config.prefill_replicas,
            Pool.DECODE: config.decode_replicas,
            Pool.COLOCATED: config.colocated_replicas,
        }
        for pool in config.pools:
            for _ in range(initial[pool]):
                self._new_replica(pool, ReplicaState.READY, 0.0)
        self._finished_result: SimResult | None = None

    # ---- time ---------------------------------------------------------------------------------------------

    def advance_to(self, t_s: float) -> None:
        """Process everything that happens up to simulated time t_s (must not go backwards)."""
        if not math.isfinite(t_s):
            raise ValueError(f"advance_to needs a finite time, got {t_s}")
        if t_s < self.now_s:
            raise ValueError(f"advance_to({t_s}) is before the current time {self.now_s}")
        self._run_until(t_s)

    def close_arrivals(self) -> int:
        """No further request of the trace arrives: ``finish`` completes the ones already in and leaves the rest
        unarrived (NaN, counted by ``SimResult.first`` only when asked). Returns how many requests arrived."""
        self.n_requests = self._ai
        return self._ai

    def finish(self) -> SimResult:
        """Run until every request has completed or been dropped, and summarise."""
        if self._finished_result is None:
            advanced_to = self.now_s
            self._run_until(math.inf)
            self.now_s = max(advanced_to, self.last_event_s)
            for r in self._replicas.values():
                self._charge(r, self.now_s)
            self._finished_result = build_result(self, time.perf_counter() - self._wall_start)
        return self._finished_result

    # ---- sizing -------------------------------------------------------------------------------------------

    def _check_pool(self, pool: Pool) -> None:
        if pool not in self.config.pools:
            names = ", ".join(p.value for p in self.config.pools)
            raise ValueError(f"pool {pool.value!r} does not exist in {self.config.mode.value} mode ({names})")

    def target(self, pool: Pool) -> int:
        """Replicas the pool is heading for: starting + ready, plus replicas draining to flip into it."""
        self._check_pool(pool)
        n = 0
        for r in self._replicas.values():
            if r.flip_to is not None:
                n += r.flip_to is pool
            elif r.pool is pool and r.state in (ReplicaState.STARTING, ReplicaState.READY):
                n += 1
        return n

    def set_target(self, pool: Pool, n: int, min_serving: int = 0) -> None:
        """Grow by starting replicas (cold start) or shrink by cancelling replicas in flight (starting, or draining
        to flip in), then draining ready ones, never below `min_serving` ready replicas (the rest is deferred)."""
        self._check_pool(pool)
        if n < 0:
            raise ValueError(f"set_target needs n >= 0, got {n}")
        t = self.now_s
        current = self.target(pool)
        if n == current:
            return
        self.scale_actions += 1
        log.debug("sim_set_target", pool=pool.value, current=current, target=n, now_s=t)
        if n > current:
            for _ in range(n - current):
                self._new_replica(pool, ReplicaState.STARTING, t)
            return
        excess = current - n - self._cancel_in_flight(pool, current - n, t)
        if excess:
            ready = sorted(self._ready[pool], key=lambda r: (len(r.queue) + r.nseq + len(r.batch), r.load))
            for r in ready[: min(excess, max(len(ready) - min_serving, 0))]:
                self._drain(r, t)

    def _cancel_in_flight(self, pool: Pool, count: int, t: float) -> int:
        """Cancel up to `count` replicas not yet serving `pool`: cold starts (newest first), then replicas still
        draining to flip into it (their flip is dropped: they finish their drain and stop). Returns how many."""
        starting = [r for r in self._replicas.values() if r.pool is pool and r.state is ReplicaState.STARTING]
        starting.sort(key=lambda r: r.since_s, reverse=True)
        chosen = starting[: max(count, 0)]
        for r in chosen:
            self._cancel(r, t)
        flipping = [r for r in self._replicas.values() if r.flip_to is pool]
        flipping.sort(key=lambda r: r.since_s, reverse=True)
        dropped = flipping[: max(count - len(chosen), 0)]
        for r in dropped:
            r.flip_to = None
        return len(chosen) + len(dropped)

    def flip_role(self, replica_id: str, to_pool: Pool) -> None:
        """Drain a ready replica, then after flip_delay_s make it serve `to_pool` (no weight reload)."""
        self._check_pool(to_pool)
        r = self._replicas.get(replica_id)
        if r is None:
            raise ValueError(f"flip_role: no live replica {replica_id!r}")
        if r.state is not ReplicaState.READY:
            raise ValueError(f"flip_role: replica {replica_id!r} is {r.state.value}, only a ready one can flip")
        if r.pool is to_pool:
            raise ValueError(f"flip_role: replica {replica_id!r} already serves {to_pool.value!r}")
        self.scale_actions += 1
        r.flip_to = to_pool
        self._drain(r, self.now_s)

    def cancel_starting(self, pool: Pool, count: int) -> int:
        """Cancel up to `count` replicas in flight to a pool (cold starts newest first, then incoming flips)."""
        self._check_pool(pool)
        n = self._cancel_in_flight(pool, count, self.now_s)
        if n:
            self.scale_actions += 1
        return n

    def drain_replica(self, replica_id: str) -> None:
        """Drain one ready replica: it takes no new work and stops once what it holds is done."""
        r = self._replicas.get(replica_id)
        if r is None:
            raise ValueError(f"drain_replica: no live replica {replica_id!r}")
        if r.state is not ReplicaState.READY:
            raise ValueError(f"drain_replica: replica {replica_id!r} is {r.state.value}, only a ready one can drain")
        self.scale_actions += 1
        self._drain(r, self.now_s)

    def _cancel(self, r: Replica, t: float) -> None:
        self._charge(r, t)
        r.state = ReplicaState.STOPPED
        r.since_s = t
        r.version += 1
        del self._replicas[r.id]
        self._retired.append(r)

    def _drain(self, r: Replica, t: float) -> None:
        self._set_state(r, ReplicaState.DRAINING, t)
        if r.act == Activity.IDLE and r.is_empty():
            self._retire(r, t)

    # ---- observation ----------------------------------------------------------------------------------------

    def replicas(self, pool: Pool) -> list[ReplicaView]:
        """Live (starting, ready, draining) replicas of a pool, including ones draining to flip into it."""
        self._check_pool(pool)
        views = [r.view() for r in self._replicas.values()]
        return [v for v in views if v.pool is pool]

    def pool_metrics(self, pool: Pool) -> PoolMetrics:
        """vLLM-like cumulative counters and current gauges of a pool."""
        self._check_pool(pool)
        t = self.now_s
        st = self.stats[pool]
        gpu_s, serving_s = self.paid_s(pool, t)
        live = [r for r in self._replicas.values() if r.pool is pool]
        serving = [r for r in live if r.state is not ReplicaState.STARTING]
        running = sum(len(r.seqs) + len(r.joins) + len(r.batch) for r in serving)
        waiting = sum(len(r.queue) for r in serving)
        if pool is Pool.COLOCATED:
            running += sum(r.n_admitted for r in serving)
            waiting -= sum(r.n_admitted for r in serving)
        if pool is self._entry:
            waiting += len(self._pend)
        if pool is Pool.DECODE:
            waiting += len(self._dq)
        kv_use = sum(r.kv_in_use for r in serving)
        kv_cap = len(serving) * self._cap
        return PoolMetrics(
            pool=pool,
            now_s=t,
            prompt_tokens_total=float(st.prompt_tokens),
            generation_tokens_total=float(st.generation_tokens),
            requests_arrived_total=float(st.arrived),
            prompt_tokens_arrived_total=float(st.prompt_arrived),
            requests_finished_total=float(st.finished),
            requests_dropped_total=float(st.dropped),
            num_requests_running=running,
            num_requests_waiting=waiting,
            kv_cache_usage_perc=kv_use / kv_cap if kv_cap else 0.0,
            kv_tokens_in_use=kv_use,
            kv_tokens_capacity=kv_cap,
            ttft_seconds=st.ttft.snapshot(),
            itl_seconds=st.itl.snapshot(),
            request_prompt_tokens=st.prompt_hist.snapshot(),
            request_generation_tokens=st.gen_hist.snapshot(),
            iteration_tokens=st.iter_tokens.snapshot(),
            request_prefill_time_seconds=st.prefill_time.snapshot(),
            ready_replicas=sum(1 for r in live if r.state is ReplicaState.READY),
            starting_replicas=sum(1 for r in live if r.state is ReplicaState.STARTING),
            draining_replicas=sum(1 for r in live if r.state is ReplicaState.DRAINING),
            busy_s_total=st.busy_s,
            serving_s_total=serving_s,
            gpu_s_total=gpu_s,
        )
