"""State of one simulated replica, and the read-only view the public API hands out."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pdscale.simulator.config import Pool, ReplicaState

__all__ = ["Activity", "Replica", "ReplicaView"]


class Activity:
    """What a replica is doing between two of its events (ints for speed in the event loop)."""

    IDLE = 0
    BATCH = 1  # a prefill batch or a colocated mixed iteration: not interruptible
    EPOCH = 2  # k identical decode steps: interruptible at any step boundary
    WAKING = 3  # an event at `now` will plan the next activity
    PLANNING = 4  # inside the planner (re-entrant wake-ups are no-ops)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A replica as the controller sees it.

    Attributes:
        id: stable name; it keeps its name across a role flip.
        pool: the pool it serves (or will serve, once a flip completes).
        state: lifecycle state; starting while it drains to flip into `pool`.
        since_s: simulated time it entered `state`.
        running: sequences it is prefilling or decoding.
        waiting: requests queued on it.
    """

    id: str
    pool: Pool
    state: ReplicaState
    since_s: float
    running: int
    waiting: int


class Replica:
    """Mutable per-replica state. Decode sequences advance on a shared step counter `g`: a sequence
    admitted at counter g0 with n output tokens finishes when g reaches g0 + n - 1, so a batch advances
    k steps with one update. Total context of the batch is s0 + len(seqs) * g."""

    __slots__ = (
        "act",
        "batch",
        "batch_b",
        "batch_dt",
        "batch_first_start_s",
        "batch_tokens",
        "charged_s",
        "epoch_dt",
        "epoch_k",
        "epoch_t",
        "flip_to",
        "g",
        "head_done",
        "head_start_s",
        "id",
        "joins",
        "kv_reserved",
        "link_free_s",
        "load",
        "n_admitted",
        "nseq",
        "pool",
        "queue",
        "s0",
        "seqs",
        "since_s",
        "state",
        "version",
    )

    def __init__(self, replica_id: str, pool: Pool, state: ReplicaState, now_s: float) -> None:
        self.id = replica_id
        self.pool = pool
        self.state = state
        self.since_s = now_s
        self.charged_s = now_s
        self.version = 0
        self.flip_to: Pool | None = None
        self.act = Activity.IDLE
        # prefill side
        self.queue: deque[int] = deque()
        self.head_done = 0
        self.head_start_s = 0.0  # when the head prompt's first chunk started (its prefill time starts there)
        self.n_admitted = 0
        self.load = 0  # routing load: pending prompt tokens (prefill), reserved KV tokens (decode)
        self.batch: list[int] = []
        self.batch_tokens = 0
        self.batch_b = 0
        self.batch_dt = 0.0
        self.batch_first_start_s = 0.0  # when the batch's first prompt started (earlier if it was chunked)
        self.link_free_s = 0.0
        # decode side
        self.seqs: list[tuple[int, int]] = []  # heap of (g_end, request index)
        self.joins: list[int] = []
        self.g = 0
        self.s0 = 0
        self.nseq = 0  # admitted sequences: seqs + joins (+ admitted prefills when colocated)
        self.kv_reserved = 0
        self.epoch_t = 0.0
        self.epoch_dt = 0.0
        self.epoch_k = 0

    @property
    def kv_in_use(self) -> int:
        """KV tokens held by the running decode batch."""
        return self.s0 + len(self.seqs) * self.g if self.seqs else 0

    def is_empty(self) -> bool:
        """True when the replica holds no work at all."""
        return not (self.queue or self.seqs or self.joins or self.batch or self.act == Activity.BATCH)

    def view(self) -> ReplicaView:
        """Read-only snapshot for the public API."""
        pool = self.flip_to if self.flip_to is not None else self.pool
        # Draining to flip in: it serves its new pool only once drained and switched, so it is starting there.
        state = ReplicaState.STARTING if self.flip_to is not None else self.state
        running = len(self.seqs) + len(self.joins) + len(self.batch)
        waiting = len(self.queue) - (len(self.batch) if self.pool is not Pool.COLOCATED else 0)
        return ReplicaView(self.id, pool, state, self.since_s, running, max(waiting, 0))
