"""Random action sequences against the real Reconciler with faults, GPUs held counted by the actuator itself.

``LedgerActuator`` is an in-memory cluster that owns the truth: every replica it holds (starting, ready, draining,
or draining to flip into another pool) is a GPU reservation, counted by ``held_gpus()`` from its own records,
never from the decision code's cost function. Role flips are in place: a flipped replica drains in its pool,
then starts in the other, holding its GPUs once throughout.

``FaultyActuator`` wraps it: reads fail, writes fail before applying (409 Conflict), writes apply and then fail
(a timeout after the server acted), flips stop half-way. After every write it compares the ledger before and
after: an *overshoot* is a write after which more GPUs are held than the budget allows and more than before
the write (a budget drawn below the current spend must be reached by shrinking, never by growing).

``run_sequence(seed)`` drives one random sequence: a random policy proposes scale-ups, scale-downs, flips and
rebalances; the budget is drawn between 30 % and 150 % of the starting spend and lowered or raised mid-run;
the daemon restarts (a fresh Reconciler over the same recorder) at random ticks.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import ActuationError, PolicyContext, Proposal
from pdscale.controller.core.types import (
    SLO,
    ErrorClass,
    PoolRole,
    PoolSpec,
    ReplicaInfo,
    ReplicaState,
    RoleFlip,
    Signals,
)
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.record import InMemoryRecorder
from pdscale.testing import ManualClock, StaticMetricsSource

__all__ = ["FaultyActuator", "LedgerActuator", "SequenceResult", "run_sequence"]

POOLS = ("prefill", "decode")


@dataclass(slots=True)
class _Replica:
    id: str
    pool: str
    state: ReplicaState
    since_s: float
    dest: str | None = None
    """The pool a flipping replica joins once drained."""


@dataclass
class LedgerActuator:
    """The cluster's truth; see the module docstring."""

    specs: dict[str, PoolSpec]
    clock: ManualClock
    start_s: float
    drain_s: float
    targets: dict[str, int] = field(default_factory=dict)
    reps: list[_Replica] = field(default_factory=list)
    _seq: int = 0

    def _new(self, pool: str, state: ReplicaState) -> _Replica:
        self._seq += 1
        return _Replica(f"{pool}-{self._seq}", pool, state, self.clock.now)

    def settle(self) -> None:
        """Advance lifecycles to the clock: starting becomes ready, drained replicas leave or flip."""
        now = self.clock.now
        keep: list[_Replica] = []
        for r in self.reps:
            if r.state is ReplicaState.DRAINING and now - r.since_s >= self.drain_s:
                if r.dest is None:
                    continue
                r.pool, r.dest, r.state, r.since_s = r.dest, None, ReplicaState.STARTING, r.since_s + self.drain_s
            if r.state is ReplicaState.STARTING and now - r.since_s >= self.start_s:
                r.state, r.since_s = ReplicaState.READY, now
            keep.append(r)
        self.reps = keep

    def held_gpus(self) -> int:
        """GPUs reserved by every replica the ledger holds, at the pool it is in now."""
        self.settle()
        return sum(self.specs[r.pool].gpus_per_replica for r in self.reps)

    def target_size(self, pool: str) -> int:
        return self.targets[pool]

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        self.settle()
        return [ReplicaInfo(r.id, pool, r.state, r.since_s) for r in self.reps if r.pool == pool]

    def set_target(self, pool: str, n: int) -> None:
        if n < 0:
            raise ActuationError(f"negative target {n}", ErrorClass.PERMANENT)
        self.settle()
        self.targets[pool] = n
        active = [r for r in self.reps if r.pool == pool and r.state in (ReplicaState.STARTING, ReplicaState.READY)]
        incoming = [r for r in self.reps if r.dest == pool]
        have = len(active) + len(incoming)
        if have < n:
            self.reps += [self._new(pool, ReplicaState.STARTING if self.start_s else ReplicaState.READY)
                          for _ in range(n - have)]  # fmt: skip
            self.settle()
            return
        excess = have - n
        for r in sorted(active, key=lambda r: r.state is ReplicaState.READY):  # cancel starting first
            if excess <= 0:
                break
            if r.state is ReplicaState.STARTING:
                self.reps.remove(r)
            else:
                r.state, r.since_s = ReplicaState.DRAINING, self.clock.now
            excess -= 1
        for r in incoming[:excess]:
            r.dest = None  # a flip not yet landed is called off: the replica just leaves
        self.settle()

    def flip_one(self, flip: RoleFlip) -> None:
        """Flip one ready replica of ``flip.from_pool`` in place."""
        self.settle()
        if self.specs[flip.from_pool].gpus_per_replica != self.specs[flip.to_pool].gpus_per_replica:
            raise ActuationError("pools differ in GPUs per replica: no in-place flip", ErrorClass.PERMANENT)
        ready = [r for r in self.reps if r.pool == flip.from_pool and r.state is ReplicaState.READY]
        if not ready:
            raise ActuationError("no ready replica to flip", ErrorClass.TRANSIENT)
        r = ready[0]
        r.state, r.since_s, r.dest = ReplicaState.DRAINING, self.clock.now, flip.to_pool
        self.targets[flip.from_pool] -= 1
        self.targets[flip.to_pool] += 1
        self.settle()


@dataclass
class FaultyActuator:
    """Faults around the ledger, and the overshoot check after every write."""

    ledger: LedgerActuator
    rng: random.Random
    budget: list[int]
    """The budget in force (a one-item list the sequence changes)."""
    p_read: float = 0.1
    p_conflict: float = 0.1
    p_timeout: float = 0.1
    overshoots: list[str] = field(default_factory=list)
    writes: int = 0

    def _read_fault(self, pool: str) -> None:
        if self.rng.random() < self.p_read:
            raise ActuationError(f"read {pool}: 503 injected", ErrorClass.TRANSIENT)

    def target_size(self, pool: str) -> int:
        self._read_fault(pool)
        return self.ledger.target_size(pool)

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        self._read_fault(pool)
        return self.ledger.replicas(pool)

    def _write(self, what: str, apply: Any) -> None:
        self.writes += 1
        if self.rng.random() < self.p_conflict:
            raise ActuationError(f"{what}: 409 Conflict injected", ErrorClass.TRANSIENT)
        before = self.ledger.held_gpus()
        apply()
        after = self.ledger.held_gpus()
        if after > self.budget[0] and after > before:
            self.overshoots.append(f"{what}: held {before} -> {after} GPUs, budget {self.budget[0]}")
        if self.rng.random() < self.p_timeout:
            raise ActuationError(f"{what}: timed out after the write was applied", ErrorClass.TRANSIENT)

    def set_target(self, pool: str, n: int) -> None:
        self._write(f"set_target({pool}, {n})", lambda: self.ledger.set_target(pool, n))

    def flip_roles(self, flip: RoleFlip) -> None:
        for i in range(flip.count):
            if i > 0 and self.rng.random() < self.p_timeout:
                raise ActuationError(f"flip stopped after {i} of {flip.count}", ErrorClass.TRANSIENT)
            self._write(f"flip({flip.from_pool}->{flip.to_pool})", lambda: self.ledger.flip_one(flip))


@dataclass
class RandomPolicy:
    """Proposes random targets and flips: scale-ups, scale-downs, rebalances."""

    rng: random.Random
    name: str = "random"

    def decide(self, ctx: PolicyContext) -> Proposal:
        targets = {}
        for p, spec in ctx.pools.items():
            current = ctx.states[p].target
            move = self.rng.choice([0, 1, 2, 4, -1, -2, -4, 8])
            targets[p] = max(0, min(spec.max_replicas + 2, current + move))
        flips: tuple[RoleFlip, ...] = ()
        if ctx.supports_role_flip and self.rng.random() < 0.3:
            src, dst = self.rng.sample(list(ctx.pools), 2)
            n = self.rng.randint(1, 3)
            flips = (RoleFlip(src, dst, n),)
            targets[src] = max(0, ctx.states[src].target - n)
            targets[dst] = ctx.states[dst].target + n
        return Proposal(targets=targets, flips=flips, counts_starting=True)


@dataclass(frozen=True, slots=True)
class SequenceResult:
    """One sequence's outcome."""

    seed: int
    ticks: int
    writes: int
    overshoots: tuple[str, ...]


def run_sequence(seed: int, ticks: int = 30, *, daemon_budget: bool = True) -> SequenceResult:
    """One random sequence (see the module docstring); deterministic per seed.

    ``daemon_budget=False`` keeps the budget from the daemon (the check still measures against it), to show the
    check sees overshoots."""
    rng = random.Random(seed)
    same = rng.random() < 0.5
    gpr = {"prefill": rng.choice([1, 2, 4, 8])}
    gpr["decode"] = gpr["prefill"] if same else rng.choice([1, 2, 4, 8])
    specs = {
        p: PoolSpec(p, PoolRole(p), gpr[p], rng.randint(0, 2), rng.randint(3, 12), cold_start_s=60.0) for p in POOLS
    }
    clock = ManualClock(1000.0)
    ledger = LedgerActuator(specs, clock, start_s=rng.choice([0.0, 30.0, 90.0]), drain_s=rng.choice([0.0, 30.0, 120.0]))
    for p, spec in specs.items():
        ledger.set_target(p, rng.randint(spec.min_replicas, spec.max_replicas))
    spend = ledger.held_gpus()
    budget = [max(1, int(spend * rng.uniform(0.3, 1.5)))]
    act = FaultyActuator(ledger, rng, budget, p_read=rng.choice([0.0, 0.1, 0.3]))
    recorder = InMemoryRecorder()
    signals = Signals(arrival_rate_per_s=5.0, request_rate_per_s=5.0, running_requests=10.0, waiting_requests=0.0)
    source = StaticMetricsSource.ok(dict.fromkeys(POOLS, signals), clock)
    guards = GuardSettings(
        max_step_down=rng.choice([1, 4]),
        scale_down_window_s=rng.choice([0.0, 60.0]),
        hold_while_starting=rng.random() < 0.5,
    )
    tick_s = 15.0

    def daemon() -> Reconciler:
        return Reconciler(
            pools=specs,
            source=source,
            actuator=act,
            policy=RandomPolicy(rng),
            slo=SLO(ttft_ms=1000.0, itl_ms=50.0),
            tick_s=tick_s,
            budget_gpus=budget[0] if daemon_budget else None,
            recorder=recorder,
            guard_settings=guards,
        )

    rec = daemon()
    for _ in range(ticks):
        if rng.random() < 0.1:
            rec = daemon()  # a restart: nothing kept but what the recorder stored
        if rng.random() < 0.1:
            budget[0] = max(1, int(ledger.held_gpus() * rng.uniform(0.3, 1.5)))
            rec.budget_gpus = budget[0] if daemon_budget else None
        clock.advance(tick_s)
        rec.run_once(clock.now)
    return SequenceResult(seed, ticks, act.writes, tuple(act.overshoots))
