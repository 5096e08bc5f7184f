"""A test harness that ships with pdscale: a manual clock, a static metrics source, a fake actuator.

Use them to drive the Reconciler in tests and replays without any cluster::

    clock = ManualClock()
    source = StaticMetricsSource.ok({"prefill": Signals(...)}, clock)
    actuator = FakeActuator({"prefill": 2, "decode": 2}, clock=clock, start_delay_s=60)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import (
    DataState,
    ErrorClass,
    PoolObservation,
    ReplicaInfo,
    ReplicaState,
    RoleFlip,
    Signals,
)

__all__ = ["FakeActuator", "ManualClock", "StaticMetricsSource"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ManualClock:
    """A clock that moves only when told."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward and return the new time."""
        self.now += seconds
        return self.now


class StaticMetricsSource:
    """Returns the observations it was given; tests change them between ticks.

    ``fail_with`` makes ``fetch`` raise, as a broken source would.
    """

    def __init__(
        self,
        pools: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        env: object = None,
        *,
        observations: Mapping[str, PoolObservation] | None = None,
    ) -> None:
        self.observations: dict[str, PoolObservation] = dict(observations or {})
        for name in pools or {}:
            self.observations.setdefault(name, PoolObservation.missing(name, "no data set yet"))
        self.fail_with: Exception | None = None
        self.fetches = 0
        self.closed = False
        del params, env

    @classmethod
    def ok(cls, signals: Mapping[str, Signals], clock: Callable[[], float] | None = None) -> StaticMetricsSource:
        """A source whose pools all report these signals, sampled now (per ``clock`` at fetch time)."""
        src = cls()
        src._clock = clock  # type: ignore[attr-defined]
        for name, sig in signals.items():
            src.set(name, sig)
        return src

    def set(self, pool: str, signals: Signals, sample_time_s: float | None = None) -> None:
        """Report ``signals`` for ``pool`` (sample time: ``sample_time_s`` or the fetch time)."""
        self.observations[pool] = PoolObservation(
            pool=pool, state=DataState.OK, signals=signals, sample_time_s=sample_time_s
        )

    def set_missing(self, pool: str, reason: str = "no data") -> None:
        """Make ``pool`` report missing data."""
        self.observations[pool] = PoolObservation.missing(pool, reason)

    def fetch(self, now: float) -> Mapping[str, PoolObservation]:
        """The stored observations; those without a sample time are stamped ``now``."""
        self.fetches += 1
        if self.fail_with is not None:
            raise self.fail_with
        out: dict[str, PoolObservation] = {}
        for name, obs in self.observations.items():
            stamp = obs.state is DataState.OK and obs.sample_time_s is None
            out[name] = (
                PoolObservation(pool=name, state=obs.state, signals=obs.signals, sample_time_s=now, reason=obs.reason)
                if stamp
                else obs
            )
        return out

    def close(self) -> None:
        """Nothing to release."""
        self.closed = True


@dataclass(slots=True)
class _FakeReplica:
    id: str
    state: ReplicaState
    since_s: float


@dataclass(slots=True)
class _FakePool:
    target: int
    replicas: list[_FakeReplica] = field(default_factory=list)


class FakeActuator:
    """An in-memory actuator with lifecycle states and failure hooks.

    Replicas start ``start_delay_s`` after they are requested (per ``clock``), and draining ones leave after
    ``drain_s``. ``fail_next(pool, n, error_class)`` makes the next ``n`` ``set_target`` calls fail.
    ``calls`` records every ``set_target`` and ``flip_roles`` call for assertions.
    """

    def __init__(
        self,
        pools: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        env: object = None,
        *,
        clock: Callable[[], float] | None = None,
        start_delay_s: float = 0.0,
        drain_s: float = 0.0,
    ) -> None:
        params = dict(params or {})
        self._clock: Callable[[], float] = clock or (lambda: 0.0)
        self.start_delay_s = float(params.get("start_delay_s", start_delay_s))
        self.drain_s = float(params.get("drain_s", drain_s))
        self.dry_run = bool(params.get("dry_run", False))
        self._pools: dict[str, _FakePool] = {}
        self._seq = 0
        self.calls: list[tuple[str, str, int]] = []
        self._failures: dict[str, list[ErrorClass]] = {}
        for name, spec in pools.items():
            n = (
                spec
                if isinstance(spec, int)
                else int(getattr(spec, "initial_replicas", None) or getattr(spec, "min_replicas", 0) or 0)
            )
            pool = _FakePool(target=n)
            for _ in range(n):
                pool.replicas.append(self._new(name, ReplicaState.READY))
            self._pools[name] = pool
        del env

    def _new(self, pool: str, state: ReplicaState) -> _FakeReplica:
        self._seq += 1
        return _FakeReplica(id=f"{pool}-{self._seq}", state=state, since_s=self._clock())

    def _pool(self, pool: str) -> _FakePool:
        try:
            return self._pools[pool]
        except KeyError:
            raise ActuationError(f"unknown pool {pool!r}", ErrorClass.PERMANENT) from None

    def _settle(self, pool: _FakePool) -> None:
        now = self._clock()
        for r in pool.replicas:
            if r.state is ReplicaState.STARTING and now - r.since_s >= self.start_delay_s:
                r.state, r.since_s = ReplicaState.READY, now
        pool.replicas = [
            r for r in pool.replicas if not (r.state is ReplicaState.DRAINING and now - r.since_s >= self.drain_s)
        ]

    def fail_next(self, pool: str, times: int = 1, error_class: ErrorClass = ErrorClass.TRANSIENT) -> None:
        """Make the next ``times`` ``set_target`` calls for ``pool`` raise ActuationError."""
        self._failures.setdefault(pool, []).extend([error_class] * times)

    def set_external_target(self, pool: str, replicas: int) -> None:
        """Change a target behind pdscale's back, as another owner would."""
        self._apply(pool, replicas)

    def target_size(self, pool: str) -> int:
        """The requested replica count."""
        return self._pool(pool).target

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """Replicas with their lifecycle states."""
        p = self._pool(pool)
        self._settle(p)
        return [ReplicaInfo(id=r.id, pool=pool, state=r.state, since_s=r.since_s) for r in p.replicas]

    def dry_run_view(self) -> FakeActuator:
        """A dry-run actuator over the same in-memory pools: it reads them and changes nothing."""
        view = copy.copy(self)
        view.dry_run, view.calls = True, []
        return view

    def set_target(self, pool: str, replicas: int) -> None:
        """Request ``replicas``; scale-down cancels starting replicas, then drains ready ones."""
        if self.dry_run:
            if replicas < 0:
                raise ActuationError(f"negative target {replicas} for {pool}", ErrorClass.PERMANENT)
            log.info("actuator_dry_run", backend="fake", pool=pool, op="set_target", replicas=replicas)
            self._pool(pool)
            return
        self.calls.append(("set_target", pool, replicas))
        pending = self._failures.get(pool)
        if pending:
            raise ActuationError(f"injected failure for {pool}", pending.pop(0))
        self._apply(pool, replicas)

    def _apply(self, pool: str, replicas: int) -> None:
        if replicas < 0:
            raise ActuationError(f"negative target {replicas} for {pool}", ErrorClass.PERMANENT)
        p = self._pool(pool)
        self._settle(p)
        p.target = replicas
        active = [r for r in p.replicas if r.state in (ReplicaState.STARTING, ReplicaState.READY)]
        if len(active) < replicas:
            state = ReplicaState.READY if self.start_delay_s <= 0 else ReplicaState.STARTING
            p.replicas.extend(self._new(pool, state) for _ in range(replicas - len(active)))
        excess = len(active) - replicas
        for r in sorted(active, key=lambda r: r.state is ReplicaState.READY):
            if excess <= 0:
                break
            if r.state is ReplicaState.STARTING:
                p.replicas.remove(r)
            else:
                r.state, r.since_s = ReplicaState.DRAINING, self._clock()
            excess -= 1
        self._settle(p)

    def flip_roles(self, flip: RoleFlip) -> None:
        """Move replicas between pools in place (drain one, start one)."""
        if self.dry_run:
            log.info("actuator_dry_run", backend="fake", op="flip_roles", flip=str(flip))
            return
        self.calls.append(("flip_roles", f"{flip.from_pool}->{flip.to_pool}", flip.count))
        src, dst = self._pool(flip.from_pool), self._pool(flip.to_pool)
        self._apply(flip.from_pool, src.target - flip.count)
        self._apply(flip.to_pool, dst.target + flip.count)
