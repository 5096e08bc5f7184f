"""Simulation state and the replica fleet: the event heap, drops and no-replica timeouts, replica lifecycle
(start, ready, drain, flip, stop), GPU-time accounting and periodic samples.

`pdscale.simulator.engine.Engine` adds arrivals, routing, batching and decode epochs on top; the two hooks
below are its.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque

from pdscale.simulator.config import DROP_CODES, ClusterConfig, DropReason, Mode, Pool, ReplicaState, TraceLike
from pdscale.simulator.histogram import LogHistogram
from pdscale.simulator.metrics import PoolStats
from pdscale.simulator.replica import Activity, Replica

__all__ = ["EV_KV_DONE", "EV_READY", "EV_REPLICA", "EV_SAMPLE", "EV_TIMEOUT", "Fleet"]

EV_REPLICA = 0
EV_KV_DONE = 1
EV_READY = 2
EV_TIMEOUT = 3
EV_SAMPLE = 4

_IDLE = Activity.IDLE


class Fleet:
    """Simulation state, the event heap and the replica fleet (see the module docstring)."""

    def __init__(self, config: ClusterConfig, trace: TraceLike) -> None:
        self.config = config
        self.trace = trace
        perf = config.perf
        self._perf = perf
        self._prefill_ms = perf.prefill_ms
        self._decode_ms = perf.decode_step_ms
        self._cap = int(perf.max_kv_tokens)
        self._window = int(config.max_model_len or getattr(perf, "context_window_tokens", 0) or 0)
        self._kvb = float(perf.kv_bytes_per_token)
        self._link_bps = config.kv_link_bytes_per_s
        self._max_seqs = int(config.max_running_seqs)
        self._gpus = int(perf.gpus_per_replica)
        n = len(trace.arrival_s)
        self.n_requests = n
        self._arr: list[float] = trace.arrival_s.astype(float).tolist()
        self._inp: list[int] = trace.input_tokens.astype(int).tolist()
        self._out: list[int] = trace.output_tokens.astype(int).tolist()
        self._ai = 0  # next trace arrival
        nan = math.nan
        self.first_token_s = array("d", [nan]) * n
        self.prefill_done_s = array("d", [nan]) * n
        self.finish_s = array("d", [nan]) * n
        self.drop_code = array("b", [0]) * n
        self.now_s = 0.0
        self.last_event_s = 0.0
        self._heap: list[tuple[float, int, int, object, int]] = []
        self._seq = 0
        self._replicas: dict[str, Replica] = {}
        self._retired: list[Replica] = []
        self._next_id = 0
        self._ready: dict[Pool, list[Replica]] = {p: [] for p in Pool}
        self.stats: dict[Pool, PoolStats] = {p: PoolStats(self._cap) for p in config.pools}
        self.itl_tokens = LogHistogram()
        self._entry = Pool.PREFILL if config.mode is Mode.DISAGG else Pool.COLOCATED
        self._pend: deque[int] = deque()  # arrivals waiting for any ready entry replica
        self._pend_t: deque[float] = deque()
        self._dq: deque[int] = deque()  # KV-landed requests waiting for decode admission
        self._dq_t: deque[float] = deque()
        self._timeout_armed: dict[Pool, bool] = dict.fromkeys(Pool, False)
        self.samples: list[tuple[float, Pool, int, int, int, float, float, float, float]] = []
        self._sample_marks: dict[Pool, tuple[float, float, int, int]] = dict.fromkeys(config.pools, (0.0, 0.0, 0, 0))
        self.scale_actions = 0
        self._push(config.sample_interval_s, EV_SAMPLE, None, 0)

    # ---- event plumbing -------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, obj: object, ver: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, obj, ver))

    def _work_left(self) -> bool:
        return self._ai < self.n_requests or any(e[2] != EV_SAMPLE for e in self._heap)

    # ---- hooks of the engine ------------------------------------------------------------------------------

    def _flush_pending(self, t: float) -> None:
        """Route arrivals that waited for an entry replica (the engine's)."""
        raise NotImplementedError

    def _drain_decode_queue(self, t: float) -> None:
        """Admit KV-landed requests that waited for a decode replica (the engine's)."""
        raise NotImplementedError

    # ---- drops and timeouts -----------------------------------------------------------------------------

    def _drop(self, rid: int, reason: DropReason, pool: Pool) -> None:
        self.drop_code[rid] = DROP_CODES[reason]
        self.stats[pool].dropped += 1

    def _arm_timeout(self, pool: Pool, since: float) -> None:
        if not self._timeout_armed[pool]:
            self._timeout_armed[pool] = True
            self._push(since + self.config.no_replica_timeout_s, EV_TIMEOUT, pool, 0)

    def _on_timeout(self, pool: Pool, t: float) -> None:
        self._timeout_armed[pool] = False
        if self._ready[pool]:
            return
        ids, times = (self._pend, self._pend_t) if pool is self._entry else (self._dq, self._dq_t)
        limit = self.config.no_replica_timeout_s
        while ids and t - times[0] >= limit - 1e-9:
            times.popleft()
            self._drop(ids.popleft(), DropReason.NO_REPLICA, pool)
        if ids:
            self._arm_timeout(pool, times[0])

    # ---- lifecycle ------------------------------------------------------------------------------------

    def _charge(self, r: Replica, t: float) -> None:
        """Book paid time of r up to t on its current pool."""
        span = t - r.charged_s
        if span > 0 and r.state is not ReplicaState.STOPPED:
            st = self.stats.get(r.pool)
            if st is not None:
                st.gpu_s += span * self._gpus
                if r.state is not ReplicaState.STARTING:
                    st.serving_s += span
        r.charged_s = max(r.charged_s, t)

    def paid_s(self, pool: Pool, t: float) -> tuple[float, float]:
        """(GPU-seconds, serving replica-seconds) of a pool up to t, open intervals included."""
        st = self.stats[pool]
        gpu_s, serving_s = st.gpu_s, st.serving_s
        for r in self._replicas.values():
            if r.pool is pool and t > r.charged_s:
                gpu_s += (t - r.charged_s) * self._gpus
                if r.state is not ReplicaState.STARTING:
                    serving_s += t - r.charged_s
        return gpu_s, serving_s

    def _set_state(self, r: Replica, state: ReplicaState, t: float) -> None:
        self._charge(r, t)
        if r.state is ReplicaState.READY and state is not ReplicaState.READY:
            self._ready[r.pool].remove(r)
        r.state = state
        r.since_s = t
        if state is ReplicaState.READY:
            self._ready[r.pool].append(r)

    def _new_replica(self, pool: Pool, state: ReplicaState, t: float) -> Replica:
        r = Replica(f"{pool.value}-{self._next_id}", pool, state, t)
        self._next_id += 1
        self._replicas[r.id] = r
        if state is ReplicaState.READY:
            self._ready[pool].append(r)
        else:
            self._push(t + self.config.cold_start_s, EV_READY, r, r.version)
        return r

    def _on_ready(self, r: Replica, ver: int, t: float) -> None:
        if ver != r.version or r.state is not ReplicaState.STARTING:
            return
        self._set_state(r, ReplicaState.READY, t)
        r.act = _IDLE
        if r.pool is self._entry:
            self._flush_pending(t)
        elif r.pool is Pool.DECODE and self._dq:
            self._drain_decode_queue(t)

    def _retire(self, r: Replica, t: float) -> None:
        """A draining replica is empty: stop it, or start it in its new role after a flip."""
        stop_at = max(t, r.link_free_s) if r.pool is Pool.PREFILL else t
        self._charge(r, stop_at)
        if r.flip_to is not None:
            old = r.pool
            r.pool = r.flip_to
            r.flip_to = None
            r.state = ReplicaState.STARTING
            r.since_s = stop_at
            r.charged_s = stop_at
            r.g = r.s0 = r.kv_reserved = r.nseq = r.load = 0
            r.version += 1
            self._push(stop_at + self.config.flip_delay_s, EV_READY, r, r.version)
            if old is Pool.DECODE and not self._ready[old] and self._dq:
                self._arm_timeout(old, t)
            return
        r.state = ReplicaState.STOPPED
        r.since_s = stop_at
        r.version += 1
        del self._replicas[r.id]
        self._retired.append(r)
        if r.pool is Pool.DECODE and not self._ready[r.pool] and self._dq:
            self._arm_timeout(r.pool, t)

    # ---- samples ----------------------------------------------------------------------------------------

    def _on_sample(self, t: float) -> None:
        for pool in self.config.pools:
            st = self.stats[pool]
            busy0, serving0, arrived0, prompt0 = self._sample_marks[pool]
            _, serving_s = self.paid_s(pool, t)
            d_serving = serving_s - serving0
            util = min(1.0, (st.busy_s - busy0) / d_serving) if d_serving > 0 else math.nan
            live = [r for r in self._replicas.values() if r.pool is pool]
            ready = sum(1 for r in live if r.state is ReplicaState.READY)
            starting = sum(1 for r in live if r.state is ReplicaState.STARTING)
            draining = len(live) - ready - starting
            serving = [r for r in live if r.state is not ReplicaState.STARTING]
            kv_share = sum(r.kv_in_use for r in serving) / (len(serving) * self._cap) if serving else math.nan
            interval = self.config.sample_interval_s
            self.samples.append(
                (
                    t,
                    pool,
                    ready,
                    starting,
                    draining,
                    util,
                    kv_share,
                    (st.arrived - arrived0) / interval,
                    (st.prompt_tokens - prompt0) / interval,
                )
            )
            self._sample_marks[pool] = (st.busy_s, serving_s, st.arrived, st.prompt_tokens)
        if self._work_left():
            self._push(t + self.config.sample_interval_s, EV_SAMPLE, None, 0)
