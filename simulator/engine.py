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
from operator import attrgetter

from pdscale.simulator.config import DropReason, Pool, ReplicaState
from pdscale.simulator.fleet import EV_KV_DONE, EV_READY, EV_REPLICA, EV_SAMPLE, EV_TIMEOUT, Fleet
from pdscale.simulator.metrics import PoolStats
from pdscale.simulator.replica import Activity, Replica

__all__ = ["Engine"]

_EV_REPLICA = EV_REPLICA
_EV_KV_DONE = EV_KV_DONE
_EV_READY = EV_READY
_EV_TIMEOUT = EV_TIMEOUT
_EV_SAMPLE = EV_SAMPLE

_IDLE = Activity.IDLE
_BATCH = Activity.BATCH
_EPOCH = Activity.EPOCH
_WAKING = Activity.WAKING
_PLANNING = Activity.PLANNING

_load_key = attrgetter("load")


class Engine(Fleet):
    """Event handlers over the fleet; `pdscale.simulator.cluster.Cluster` adds the public API."""

    # ---- event loop ---------------------------------------------------------------------------------------

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

    # ---- arrivals and routing ---------------------------------------------------------------------------

    def _arrive(self, rid: int, t: float) -> None:
        if self._window and self._inp[rid] + self._out[rid] > self._window:
            self._drop(rid, DropReason.EXCEEDS_CONTEXT_WINDOW, self._entry)
            return
        if self._inp[rid] + self._out[rid] > self._cap:
            self._drop(rid, DropReason.EXCEEDS_KV_CAPACITY, self._entry)
            return
        st = self.stats[self._entry]
        st.arrived += 1
        st.prompt_arrived += self._inp[rid]
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
        r.batch_first_start_s = r.head_start_s if r.head_done else t
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
                if off == 0:
                    r.head_start_s = t
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
        st.iter_tokens.observe(r.batch_tokens)
        start = r.batch_first_start_s
        for rid in r.batch:
            st.prefill_time.observe(t - start)
            start = t - r.batch_dt
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
