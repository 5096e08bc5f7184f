"""Actuator over the embedded cluster simulator: scaling, role flips, drains and cancels act on a Cluster.

The Cluster is shared through ``env.resources["simulator"]`` (built by
``pdscale.controller.runtime.replay.ensure_cluster``);
``env.resources["simulator_lock"]`` (an RLock), when present, guards calls against a thread advancing it.
Controller pool names map to simulator pools by role (prefill, decode, colocated).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from pdscale.actuators.base import CallLog, parse_params
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, ReplicaInfo, ReplicaState, RoleFlip
from pdscale.simulator import Cluster, Pool
from pdscale.simulator.config import pools_by_name

BACKEND = "simulator"


class SimulatorActuatorParams(BaseModel):
    """``actuator.params`` of the simulator actuator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dry_run: bool = False
    """Read the simulated cluster, log what would change, change nothing."""


__all__ = ["SimulatorActuator"]


class SimulatorActuator:
    """Actuator, SupportsRoleFlip, SupportsDrain and SupportsCancelPending over a simulated Cluster."""

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
            raise ValueError("SimulatorActuator needs a simulator Cluster (env.resources['simulator'])")
        self.params = parse_params(SimulatorActuatorParams, params or {}, BACKEND)
        self.calls = CallLog(BACKEND, dry_run=self.params.dry_run)
        self.cluster = found
        self._lock = lock or resources.get("simulator_lock") or threading.RLock()
        self._pools = pools_by_name(pools)
        self._min_serving = {name: int(getattr(spec, "min_replicas", 0) or 0) for name, spec in pools.items()}
        for name, pool in self._pools.items():
            if pool not in self.cluster.config.pools:
                raise ValueError(
                    f"pool {name!r} has role {pool.value!r}, which a {self.cluster.config.mode.value} simulator lacks"
                )

    @contextlib.contextmanager
    def _on(self, pool: str) -> Iterator[Pool]:
        sim_pool = self._pools.get(pool)
        if sim_pool is None:
            raise ActuationError(f"unknown pool {pool!r}; known: {sorted(self._pools)}", ErrorClass.PERMANENT)
        with self._lock:
            try:
                yield sim_pool
            except ValueError as exc:
                raise ActuationError(str(exc), ErrorClass.PERMANENT) from exc

    def target_size(self, pool: str) -> int:
        """Starting + ready replicas, plus ones draining to flip into the pool."""
        with self._on(pool) as p:
            return self.cluster.target(p)

    def set_target(self, pool: str, replicas: int) -> None:
        """Grow with cold starts; shrink by cancelling replicas in flight, then draining the least-loaded ready
        ones, keeping at least ``min_replicas`` serving (a drain that would go below waits for a later call)."""
        with self.calls.call(pool, "set_target", replicas=replicas) as extra, self._on(pool) as p:
            if self.params.dry_run:
                if replicas < 0:  # what the cluster would refuse
                    raise ActuationError(f"set_target needs n >= 0, got {replicas}", ErrorClass.PERMANENT)
                self.calls.would(pool, "set_target", current=self.cluster.target(p), replicas=replicas)
                extra["result"] = "dry_run"
                return
            self.cluster.set_target(p, replicas, min_serving=self._min_serving[pool])

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """Live replicas with lifecycle state and load (running + waiting)."""
        with self._on(pool) as p:
            views = self.cluster.replicas(p)
        return [
            ReplicaInfo(
                id=v.id,
                pool=pool,
                state=ReplicaState(v.state.value),
                since_s=v.since_s,
                load=float(v.running + v.waiting),
            )
            for v in views
        ]

    def flip_roles(self, flip: RoleFlip) -> None:
        """Flip the least-loaded ready replicas of ``flip.from_pool`` into ``flip.to_pool``, as many as leave
        ``min_replicas`` of the source serving; a flipped replica is starting in its new pool until it switches."""
        to_pool = self._pools.get(flip.to_pool)
        if to_pool is None:
            raise ActuationError(f"unknown pool {flip.to_pool!r}", ErrorClass.PERMANENT)
        with self.calls.call(flip.from_pool, "flip_roles", to_pool=flip.to_pool, count=flip.count) as extra:
            self._flip(flip, to_pool, extra)

    def _flip(self, flip: RoleFlip, to_pool: Pool, extra: dict[str, Any]) -> None:
        with self._on(flip.from_pool) as p:
            ready = [v for v in self.cluster.replicas(p) if v.state.value == "ready" and v.pool is p]
            spare = len(ready) - self._min_serving[flip.from_pool]
            if spare < 1:
                raise ActuationError(
                    f"flip {flip.from_pool}->{flip.to_pool}: {flip.count} requested, {len(ready)} ready and "
                    f"min_replicas {self._min_serving[flip.from_pool]} must keep serving",
                    ErrorClass.TRANSIENT,
                )
            count = min(flip.count, spare)
            if count < flip.count:
                extra["deferred"] = flip.count - count
            chosen = sorted(ready, key=lambda v: (v.running + v.waiting, v.id))[:count]
            if self.params.dry_run:
                self.calls.would(flip.from_pool, "flip_roles", replicas=[v.id for v in chosen], to_pool=flip.to_pool)
                extra["result"] = "dry_run"
                return
            for v in chosen:
                self.cluster.flip_role(v.id, to_pool)

    def drain(self, pool: str, replica_ids: Sequence[str]) -> None:
        """Drain these ready replicas; each stops once it has finished its work."""
        with self.calls.call(pool, "drain", replicas=list(replica_ids)) as extra, self._on(pool):
            if self.params.dry_run:
                self.calls.would(pool, "drain", replicas=list(replica_ids))
                extra["result"] = "dry_run"
                return
            for rid in replica_ids:
                self.cluster.drain_replica(rid)

    def cancel_pending(self, pool: str, count: int) -> int:
        """Cancel up to ``count`` starting replicas (newest first)."""
        with self.calls.call(pool, "cancel_pending", count=count) as extra, self._on(pool) as p:
            if self.params.dry_run:
                self.calls.would(pool, "cancel_pending", count=count)
                extra["result"] = "dry_run"
                return 0
            return self.cluster.cancel_starting(p, count)
