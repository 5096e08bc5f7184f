"""Event-driven core of the cluster simulator: routing, batching, decode epochs, KV transfer, lifecycle.

Time is simulated seconds. One heap holds replica decision points, KV arrivals, cold-start completions,
no-replica timeouts and samples; trace arrivals are merged from the sorted trace without entering the heap.
A decode replica does not step token by token: between two membership changes all its sequences advance
together, so it plans an *epoch* of k identical steps up to its next completion (step time evaluated at
the epoch's mid context) and is interrupted at the next step boundary when a sequence joins.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from operator import attrgetter

from pdscale.simulator.config import DROP_CODES, ClusterConfig, DropReason, Mode, Pool, ReplicaState, TraceLike
from pdscale.simulator.histogram import LogHistogram
from pdscale.simulator.metrics import PoolStats
from pdscale.simulator.replica import Activity, Replica

__all__ = ["Engine"]

_EV_REPLICA = 0
_EV_KV_DONE = 1
_EV_READY = 2
_EV_TIMEOUT = 3
_EV_SAMPLE = 4

_IDLE = Activity.IDLE
_BATCH = Activity.BATCH
_EPOCH = Activity.EPOCH
_WAKING = Activity.WAKING
_PLANNING = Activity.PLANNING

_load_key = attrgetter("load")


class Engine:
    """Simulation state and event handlers; `pdscale.simulator.cluster.Cluster` adds the public API."""

    def __init__(self, config: ClusterConfig, trace: TraceLike) -> None:
        self.config = config
        self.trace = trace
        perf = config.perf
        self._perf = perf
        self._prefill_ms = perf.prefill_ms
        self._decode_ms = perf.decode_step_ms
        self._cap = int(perf.max_kv_tokens)
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
        self._push(config.sample_interval_s, _EV_SAMPLE, None, 0)

    # ---- event plumbing -------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, obj: object, ver: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, obj, ver))

    def _run_until(self, t_end: float) -> None:
        """Process every event and arrival with time <= t_end (math.inf: until nothing is left)."""
        heap = self._heap
        arr = self._arr
        n = self.n_requests
        pop = heapq.heappop
        while True:
            t_arr = arr[self._ai] if self._ai < n else math.inf
            if heap and heap[0][0] <= t_arr:
                t = heap[0][0]
                if t > t_end:
                    break
                if t == math.inf:
                    break
                _, _, kind, obj, ver = pop(heap)
                self.now_s = t
                if kind != _EV_SAMPLE:
                    self.last_event_s = t
                if kind == _EV_REPLICA:
                    r: Replica = obj  # type: ignore[assignment]
                    if ver == r.version:
                        self._on_replica_event(r, t)
                elif kind == _EV_KV_DONE:
                    self._decode_arrive(ver, t)
                elif kind == _EV_READY:
                    self._on_ready(obj, ver, t)  # type: ignore[arg-type]
                elif kind == _EV_TIMEOUT:
                    self._on_timeout(obj, t)  # type: ignore[arg-type]
                else:
                    self._on_sample(t)
            elif t_arr <= t_end and t_arr < math.inf:
                rid = self._ai
                self._ai = rid + 1
                self.now_s = self.last_event_s = t_arr
                self._arrive(rid, t_arr)
            else:
                break
        if t_end < math.inf:
            self.now_s = max(self.now_s, t_end)

    def _work_left(self) -> bool:
        return self._ai < self.n_requests or any(e[2] != _EV_SAMPLE for e in self._heap)

    # ---- arrivals and routing ---------------------------------------------------------------------------

    def _arrive(self, rid: int, t: float) -> None:
        if self._inp[rid] + self._out[rid] > self._cap:
            self._drop(rid, DropReason.EXCEEDS_KV_CAPACITY, self._entry)
            return
        self.stats[self._entry].arrived += 1
        if self._pend or not self._ready[self._entry]:
            self._pend.append(rid)
            self._pend_t.append(t)
            self._arm_timeout(self._entry, t)
            return
        self._route(rid, t)

    def _route(self, rid: int, t: float) -> None:
        r = min(self._ready[self._entry], key=_load_key)
        r.queue.append(rid)
        r.load += self._inp[rid]
        if r.act == _IDLE:
            self._plan(r, t)
        elif r.act == _EPOCH:
            self._interrupt(r, t)

    def _flush_pending(self, t: float) -> None:
        pend, pend_t = self._pend, self._pend_t
        while pend and self._ready[self._entry]:
            pend_t.popleft()
            self._route(pend.popleft(), t)

    def _decode_arrive(self, rid: int, t: float) -> None:
        """The KV cache of request `rid` landed at the decode pool."""
        st = self.stats[Pool.DECODE]
        st.arrived += 1
        if self._out[rid] <= 1:
            self.first_token_s[rid] = t
            st.ttft.observe(t - self._arr[rid])
            st.generation_tokens += 1
            self._finish(rid, t, st)
            return
        if self._dq or not self._admit_decode(rid, t):
            self._dq.append(rid)
            self._dq_t.append(t)
            if not self._ready[Pool.DECODE]:
                self._arm_timeout(Pool.DECODE, t)

    def _admit_decode(self, rid: int, t: float) -> bool:
        ready = self._ready[Pool.DECODE]
        if not ready:
            return False
        r = min(ready, key=_load_key)
        need = self._inp[rid] + self._out[rid]
        if r.kv_reserved + need > self._cap or r.nseq >= self._max_seqs:
            return False
        r.kv_reserved += need
        r.load = r.kv_reserved
        r.nseq += 1
        r.joins.append(rid)
        self.first_token_s[rid] = t
        st = self.stats[Pool.DECODE]
        st.ttft.observe(t - self._arr[rid])
        st.generation_tokens += 1
        act = r.act
        if act == _IDLE:
            r.act = _WAKING
            r.version += 1
            self._push(t, _EV_REPLICA, r, r.version)
        elif act == _EPOCH:
            self._interrupt(r, t)
        return True

    def _drain_decode_queue(self, t: float) -> None:
        dq, dq_t = self._dq, self._dq_t
        while dq:
            rid = dq.popleft()
            enq = dq_t.popleft()
            if not self._admit_decode(rid, t):
                dq.appendleft(rid)
                dq_t.appendleft(enq)
                return

    def _interrupt(self, r: Replica, t: float) -> None:
        """Cut a decode epoch short at the first step boundary at or after t."""
        dt = r.epoch_dt
        j = math.ceil((t - r.epoch_t) / dt - 1e-9) if dt > 0 else 0
        j = max(j, 0)
        if j < r.epoch_k:
            r.epoch_k = j
            r.version += 1
            self._push(r.epoch_t + j * dt, _EV_REPLICA, r, r.version)

    # ---- replica activities ---------------------------------------------------------------------------

    def _on_replica_event(self, r: Replica, t: float) -> None:
        act = r.act
        if act == _EPOCH:
            k = r.epoch_k
            if k:
                b = len(r.seqs)
                r.g += k
                st = self.stats[r.pool]
                st.generation_tokens += b * k
                st.busy_s += k * r.epoch_dt
                st.itl.observe(r.epoch_dt, b * k)
                self.itl_tokens.observe(r.epoch_dt, b * k)
        elif act == _BATCH:
            if r.pool is Pool.PREFILL:
                self._end_prefill_batch(r, t)
            else:
                self._end_mixed_batch(r, t)
        self._plan(r, t)

    def _plan(self, r: Replica, t: float) -> None:
        """Choose the next activity of a replica that sits at a step boundary."""
        r.act = _PLANNING
        pool = r.pool
        if r.seqs and r.seqs[0][0] <= r.g:
            self._complete(r, t)
        if pool is Pool.PREFILL:
            if r.queue:
                self._start_prefill_batch(r, t)
                return
        elif pool is Pool.DECODE:
            if self._dq and r.state is ReplicaState.READY:
                self._drain_decode_queue(t)
            if r.joins:
                self._join(r)
            if r.seqs:
                self._start_epoch(r, t)
                return
        else:
            if r.joins:
                self._join(r)
            if r.queue and self._start_mixed_batch(r, t):
                return
            if r.seqs:
                self._start_epoch(r, t)
                return
        r.act = _IDLE
        if r.state is ReplicaState.DRAINING and r.is_empty():
            self._retire(r, t)

    def _join(self, r: Replica) -> None:
        g = r.g
        inp, out = self._inp, self._out
        seqs = r.seqs
        for rid in r.joins:
            r.s0 += inp[rid] + 1 - g
            heapq.heappush(seqs, (g + out[rid] - 1, rid))
        r.joins.clear()

    def _complete(self, r: Replica, t: float) -> None:
        seqs = r.seqs
        g = r.g
        inp, out = self._inp, self._out
        st = self.stats[r.pool]
        freed = False
        while seqs and seqs[0][0] <= g:
            g_end, rid = heapq.heappop(seqs)
            r.s0 -= inp[rid] + 1 - (g_end - out[rid] + 1)
            r.kv_reserved -= inp[rid] + out[rid]
            r.nseq -= 1
            self._finish(rid, t, st)
            freed = True
        if freed and r.pool is not Pool.COLOCATED:
            r.load = r.kv_reserved

    def _finish(self, rid: int, t: float, st: PoolStats) -> None:
        self.finish_s[rid] = t
        st.finished += 1
        st.gen_hist.observe(self._out[rid])

    def _start_epoch(self, r: Replica, t: float) -> None:
        b = len(r.seqs)
        k = r.seqs[0][0] - r.g
        dt = self._decode_ms(b, r.s0 + b * (r.g + (k - 1) * 0.5)) / 1000.0
        r.act = _EPOCH
        r.epoch_t = t
        r.epoch_dt = dt
        r.epoch_k = k
        r.version += 1
        self._push(t + k * dt, _EV_REPLICA, r, r.version)

    def _start_prefill_batch(self, r: Replica, t: float) -> None:
        budget = self.config.prefill_token_budget
        chunk = self.config.prefill_chunk_tokens
        inp = self._inp
        q = r.queue
        tokens = 0
        attn = 0.0
        n = 0
        done = r.batch
        while q and tokens < budget:
            rid = q[0]
            off = r.head_done
            rem = inp[rid] - off
            take = min(rem, chunk, budget - tokens)
            tokens += take
            end = off + take
            attn += float(end) * end - float(off) * off
            n += 1
            if take == rem:
                q.popleft()
                r.head_done = 0
                done.append(rid)
            else:
                r.head_done = end
                break
        dt = self._prefill_ms(tokens, attn, n) / 1000.0
        r.batch_tokens = tokens
        r.batch_dt = dt
        r.act = _BATCH
        r.version += 1
        self._push(t + dt, _EV_REPLICA, r, r.version)

    def _end_prefill_batch(self, r: Replica, t: float) -> None:
        st = self.stats[Pool.PREFILL]
        st.prompt_tokens += r.batch_tokens
        st.busy_s += r.batch_dt
        r.load -= r.batch_tokens
        inp, arr = self._inp, self._arr
        kvb, bps = self._kvb, self._link_bps
        link = max(r.link_free_s, t)
        for rid in r.batch:
            st.finished += 1
            st.ttft.observe(t - arr[rid])
            st.prompt_hist.observe(inp[rid])
            self.prefill_done_s[rid] = t
            link += inp[rid] * kvb / bps
            self._push(link, _EV_KV_DONE, None, rid)
        r.link_free_s = link
        r.batch.clear()

    def _start_mixed_batch(self, r: Replica, t: float) -> bool:
        """Colocated iteration: one decode step for the running batch plus a chunk of queued prompts."""
        budget = self.config.colocated_token_budget
        chunk = self.config.prefill_chunk_tokens
        inp, out = self._inp, self._out
        cap, max_seqs = self._cap, self._max_seqs
        q = r.queue
        tokens = 0
        attn = 0.0
        n = 0
        i = 0
        partial_end = 0
        for rid in q:
            if tokens >= budget:
                break
            if i >= r.n_admitted:
                need = inp[rid] + out[rid]
                if r.kv_reserved + need > cap or r.nseq >= max_seqs:
                    break
                r.kv_reserved += need
                r.nseq += 1
                r.n_admitted += 1
            off = r.head_done if i == 0 else 0
            rem = inp[rid] - off
            take = min(rem, chunk, budget - tokens)
            tokens += take
            end = off + take
            attn += float(end) * end - float(off) * off
            n += 1
            if take < rem:
                partial_end = end
                break
            r.batch.append(rid)
            i += 1
        if not tokens:
            return False
        for _ in range(i):
            q.popleft()
        r.n_admitted -= i
        r.head_done = partial_end
        b = len(r.seqs)
        if b:
            ctx = r.s0 + b * r.g
            ms = self._prefill_ms(tokens + b, attn, n) + self._decode_ms(b, ctx) - self._decode_ms(b, 0.0)
        else:
            ms = self._prefill_ms(tokens, attn, n)
        r.batch_tokens = tokens
        r.batch_b = b
        r.batch_dt = ms / 1000.0
        r.act = _BATCH
        r.version += 1
        self._push(t + r.batch_dt, _EV_REPLICA, r, r.version)
        return True

    def _end_mixed_batch(self, r: Replica, t: float) -> None:
        st = self.stats[Pool.COLOCATED]
        dt = r.batch_dt
        st.prompt_tokens += r.batch_tokens
        st.busy_s += dt
        r.load -= r.batch_tokens
        b = r.batch_b
        if b:
            r.g += 1
            st.generation_tokens += b
            st.itl.observe(dt, b)
            self.itl_tokens.observe(dt, b)
        inp, out, arr = self._inp, self._out, self._arr
        for rid in r.batch:
            self.prefill_done_s[rid] = t
            self.first_token_s[rid] = t
            st.ttft.observe(t - arr[rid])
            st.prompt_hist.observe(inp[rid])
            st.generation_tokens += 1
            if out[rid] <= 1:
                r.kv_reserved -= inp[rid] + out[rid]
                r.nseq -= 1
                self._finish(rid, t, st)
            else:
                r.joins.append(rid)
        r.batch.clear()

    # ---- drops and timeouts -----------------------------------------------------------------------------

    def _drop(self, rid: int, reason: DropReason, pool: Pool) -> None:
        self.drop_code[rid] = DROP_CODES[reason]
        self.stats[pool].dropped += 1

    def _arm_timeout(self, pool: Pool, since: float) -> None:
        if not self._timeout_armed[pool]:
            self._timeout_armed[pool] = True
            self._push(since + self.config.no_replica_timeout_s, _EV_TIMEOUT, pool, 0)

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
            self._push(t + self.config.cold_start_s, _EV_READY, r, r.version)
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
            self._push(stop_at + self.config.flip_delay_s, _EV_READY, r, r.version)
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
            self._push(t + self.config.sample_interval_s, _EV_SAMPLE, None, 0)
