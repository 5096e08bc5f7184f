# ruff: noqa: PLC0415 - requests and the plugin registry are imported lazily
"""Role flips over HTTP, beside a base scaler that owns replica counts.

For engines that switch a worker between prefill and decode in place (e.g. the proposed vLLM
``POST /v1/pd_role {"role": ..., "drain_timeout": ...}``): the engine drains the worker's in-flight work,
switches role, and keeps its weights. Endpoint, method and body are configurable.

The base scaler (any pdscale actuator, named in ``params.base`` and built through the plugin registry, or
handed in as ``env.resources["base_actuator"]``) still launches and removes workers per pool. This actuator
keeps an overlay of which worker serves which role after a flip:

- ``replicas(pool)``: the base's replicas of ``pool`` minus those flipped away, plus those flipped in;
- ``target_size(pool)``: the base's target plus the net flips into ``pool``;
- ``set_target(pool, n)``: the base gets ``n`` minus the net flips, so a flip is never undone by a resize; a
  target below the workers flipped into ``pool`` first flips the excess back to their home pools.

A flipped worker the base scaler later removes drops out of the overlay. When the base shrinks a worker's home
pool, workers flipped away from it are spared if the base can choose its victims (``spared``: the kubernetes
actuator for Deployments and custom kinds with pod-deletion-cost). The overlay is kept in ``params.overlay_path``
(default: ``<state.path>.flips.json`` beside the daemon's state store), written before and after each worker's
flip (:mod:`pdscale.actuators.flip_overlay`): a restart, or a standby taking over, knows which worker serves which
role, and ``resume_pending`` finishes a flip that a crash interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from pdscale.actuators.base import ActuatorParams, CallLog, classify_http_status, parse_params, retrying, unknown_pool
from pdscale.actuators.flip_overlay import FlipOverlay
from pdscale.controller.core.protocols import ActuationError, Actuator, DrainResult, take_drain_result
from pdscale.controller.core.types import ErrorClass, ReplicaInfo, ReplicaState, RoleFlip

__all__ = ["BaseScaler", "HttpRoleFlipActuator", "HttpRoleFlipParams"]

log = structlog.get_logger(__name__)

BACKEND = "http_role_flip"


class BaseScaler(BaseModel):
    """The actuator that owns replica counts, by plugin name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class HttpRoleFlipParams(ActuatorParams):
    """``actuator.params`` for ``http_role_flip``."""

    base: BaseScaler | None = None
    url: str = "http://$replica:8000/v1/pd_role"
    """Template; ``$replica`` (the replica id), ``$pool`` and ``$role`` are substituted."""
    method: str = Field("POST", pattern=r"^(POST|PUT|PATCH)$")
    body: str = '{"role": "$role", "drain_timeout": $drain_timeout_s}'
    """JSON template; ``$role``, ``$drain_timeout_s``, ``$replica``, ``$from_pool``, ``$to_pool`` are substituted."""
    endpoints: dict[str, str] = Field(default_factory=dict)
    """Replica id to base URL, substituted as ``$endpoint`` (when ids are not host names)."""
    roles: dict[str, str] = Field(default_factory=dict)
    """Pool name to the role the engine expects (default: the pool's role)."""
    drain_timeout_s: float | None = Field(None, ge=0)
    """Default: the source pool's drain_timeout_s."""
    overlay_path: str | None = None
    """JSON file of which worker serves which pool (default: ``<state.path>.flips.json`` under the daemon)."""


@dataclass(frozen=True, slots=True)
class _Flipped:
    replica: ReplicaInfo
    home: str
    """The pool whose base scaler owns the worker."""


class HttpRoleFlipActuator:
    """Actuator + SupportsRoleFlip: counts through a base scaler, flips through an engine's HTTP endpoint."""

    params_model: type[HttpRoleFlipParams] = HttpRoleFlipParams
    """The params schema (engine-specific subclasses extend it)."""
    backend = BACKEND
    """The name errors and call logs carry."""

    def __init__(self, pools: Mapping[str, Any], params: Mapping[str, Any], env: Any = None) -> None:
        import requests

        self.params = parse_params(self.params_model, params, self.backend)
        self.pools = dict(pools)
        self.calls = CallLog(self.backend, dry_run=self.params.dry_run)
        self._retry = self.params.retry_policy()
        self._session = requests.Session()
        resources = getattr(env, "resources", {}) or {}
        base = resources.get("base_actuator")
        if base is None:
            if self.params.base is None:
                raise ActuationError(
                    "http_role_flip: actuator.params.base: name the actuator that owns replica counts "
                    "(e.g. {name: kubernetes, params: {...}})",
                    ErrorClass.PERMANENT,
                )
            from pdscale.controller.runtime.plugins import PluginGroup, Registry

            base = Registry().create(PluginGroup.ACTUATORS, self.params.base.name, pools, self.params.base.params, env)
        self.base: Actuator = base
        path = self.params.overlay_path
        state_path = resources.get("state_path")
        if path is None and state_path and str(state_path) != ":memory:":
            path = f"{state_path}.flips.json"
        self.overlay = FlipOverlay(path, self.backend)
        """Replica id to the pool it serves now, and flips in progress (persisted when a path is known)."""

    def close(self) -> None:
        """Release the HTTP session (and the base scaler's, if it has one)."""
        self._session.close()
        closer = getattr(self.base, "close", None)
        if callable(closer):
            closer()

    def _check(self, pool: str) -> None:
        if pool not in self.pools:
            raise unknown_pool(BACKEND, pool, self.pools)

    def _role(self, pool: str) -> str:
        if pool in self.params.roles:
            return self.params.roles[pool]
        role = getattr(self.pools[pool], "role", None)
        return str(getattr(role, "value", role) or pool)

    def _flipped(self) -> list[_Flipped]:
        """Replicas serving outside their home pool, per the base scaler's current replicas."""
        self.overlay.refresh()
        out: list[_Flipped] = []
        seen: set[str] = set()
        for home in self.pools:
            for r in self.base.replicas(home):
                seen.add(r.id)
                if self.overlay.pool_of(r.id, home) != home:
                    out.append(_Flipped(r, home))
        if not self.params.dry_run:
            self.overlay.forget(seen)  # removed by the base scaler
        return out

    def _net_in(self, pool: str, flipped: Sequence[_Flipped]) -> int:
        into = sum(1 for f in flipped if self.overlay.pool_of(f.replica.id, f.home) == pool)
        return into - sum(1 for f in flipped if f.home == pool)

    # -- Actuator protocol -------------------------------------------------------------------------
    def target_size(self, pool: str) -> int:
        """The base's target plus net flips into ``pool``."""
        self._check(pool)
        with self.calls.call(pool, "target_size") as extra:
            n = self.base.target_size(pool) + self._net_in(pool, self._flipped())
            extra["replicas"] = n
            return n

    def set_target(self, pool: str, replicas: int) -> None:
        """Ask the base for ``replicas`` minus the workers flipped into ``pool`` (plus those flipped out)."""
        self._check(pool)
        if replicas < 0:
            raise ActuationError(f"http_role_flip: negative target {replicas} for {pool}", ErrorClass.PERMANENT)
        with self.calls.call(pool, "set_target", replicas=replicas) as extra:
            flipped = self._flipped()
            if self._send_home(pool, replicas, flipped):
                flipped = self._flipped()
            base_n = max(0, replicas - self._net_in(pool, flipped))
            if self.params.dry_run:
                self.calls.would(pool, "set_target", replicas=replicas, base_replicas=base_n)
                extra["result"] = "dry_run"
                return
            if self.base.target_size(pool) == base_n:
                extra["result"] = "unchanged"
                return
            spared = getattr(self.base, "spared", None)
            if isinstance(spared, dict):  # a base that picks its victims keeps the workers flipped away from pool
                spared[pool] = frozenset(f.replica.id for f in flipped if f.home == pool)
            self.base.set_target(pool, base_n)

    def _send_home(self, pool: str, replicas: int, flipped: Sequence[_Flipped]) -> bool:
        """Below the workers flipped into ``pool``, flip the excess back to their home pools (least loaded first).

        The base scaler can remove only ``pool``'s own workers; without this a target under the flipped-in count
        would never be reached (and read as another owner's change). Each returned worker's home base then
        shrinks by one (its usual victim choice and drain, sparing the workers still flipped away), so every
        other pool keeps the size the daemon gave it.
        """
        into = [f for f in flipped if self.overlay.pool_of(f.replica.id, f.home) == pool]
        excess = len(into) - replicas
        if excess <= 0 or self.params.dry_run:
            return False
        for f in sorted(into, key=lambda f: (f.replica.load, f.replica.id))[:excess]:
            r = f.replica
            log.info(
                "role_flip_home", replica=r.id, from_pool=pool, to_pool=f.home, target=replicas, backend=self.backend
            )
            replica = ReplicaInfo(id=r.id, pool=pool, state=r.state, since_s=r.since_s, load=r.load)
            home_target = max(0, self.base.target_size(f.home) - 1)
            self._flip_recorded(replica, RoleFlip(pool, f.home, 1), home_target)
        return True

    def _shrink_home(self, pool: str, home_target: int, returned: str) -> None:
        """The base target of ``pool`` after worker ``returned`` came home to be removed (the others still flipped
        away are spared; ``returned`` is not)."""
        spared = getattr(self.base, "spared", None)
        if isinstance(spared, dict):
            away = self._flipped()
            spared[pool] = frozenset(f.replica.id for f in away if f.home == pool and f.replica.id != returned)
        if self.base.target_size(pool) != home_target:
            self.base.set_target(pool, home_target)

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """The base's replicas regrouped by the role each serves now."""
        self._check(pool)
        flipped = self._flipped()
        out = [r for r in self.base.replicas(pool) if self.overlay.pool_of(r.id, pool) == pool]
        out += [
            ReplicaInfo(
                id=f.replica.id, pool=pool, state=f.replica.state, since_s=f.replica.since_s, load=f.replica.load
            )
            for f in flipped
            if self.overlay.pool_of(f.replica.id, f.home) == pool
        ]
        return out

    def take_drain_result(self, pool: str) -> DrainResult | None:
        """The base scaler's account of its last scale-down of ``pool``."""
        return take_drain_result(self.base, pool)

    # -- SupportsRoleFlip --------------------------------------------------------------------------
    def flip_roles(self, flip: RoleFlip) -> None:
        """Ask the ``count`` least-loaded ready workers of ``from_pool`` to drain and serve ``to_pool``."""
        self._check(flip.from_pool)
        self._check(flip.to_pool)
        if flip.count < 1 or flip.from_pool == flip.to_pool:
            raise ActuationError(f"http_role_flip: invalid flip {flip}", ErrorClass.PERMANENT)
        with self.calls.call(flip.from_pool, "flip_roles", to_pool=flip.to_pool, count=flip.count):
            ready = [r for r in self.replicas(flip.from_pool) if r.state is ReplicaState.READY]
            if len(ready) < flip.count:
                raise ActuationError(
                    f"flip {flip.from_pool}->{flip.to_pool}: {flip.count} requested, {len(ready)} ready",
                    ErrorClass.TRANSIENT,
                )
            for r in sorted(ready, key=lambda r: (r.load, r.id))[: flip.count]:
                self._flip_recorded(r, flip)

    def _flip_recorded(self, replica: ReplicaInfo, flip: RoleFlip, home_target: int | None = None) -> None:
        """Flip one worker between a pending mark and its commit in the overlay (nothing recorded in dry-run);
        with ``home_target``, the worker went home to be removed and its home base is set to it before the commit."""
        if self.params.dry_run:
            self._flip_one(replica, flip)
            return
        self.overlay.begin(replica.id, flip.from_pool, flip.to_pool, home_target)
        try:
            self._flip_one(replica, flip)
        except Exception:
            self.overlay.abort(replica.id)
            raise
        try:
            if home_target is not None:
                self._shrink_home(flip.to_pool, home_target, replica.id)
        finally:
            self.overlay.commit(replica.id)
        log.info(
            "role_flipped", replica=replica.id, from_pool=flip.from_pool, to_pool=flip.to_pool, backend=self.backend
        )
        event = getattr(self.base, "record_event", None)  # e.g. a Kubernetes Event on both scaled objects
        if callable(event):
            message = f"Role flip of {replica.id}: from: {flip.from_pool}; to: {flip.to_pool}; by pdscale"
            for pool in (flip.from_pool, flip.to_pool):
                event(pool, "RoleFlip", message)

    def resume_pending(self) -> list[str]:
        """Finish the flips a crash interrupted (the daemon calls this as leader, before settling its intents).

        A worker left pending may or may not have switched; the flip is sent again (the engine's role switch is
        idempotent: a worker already serving the role just confirms it). A worker the base no longer has is
        dropped; one whose flip fails again stays in the pool it came from, with a warning. Returns the ids done.
        """
        self.overlay.refresh()
        if self.params.dry_run or not self.overlay.pending:
            return []
        current = {r.id: r for home in self.pools for r in self.base.replicas(home)}
        done: list[str] = []
        for rid, p in sorted(self.overlay.pending.items()):
            if rid not in current or p.from_pool not in self.pools or p.to_pool not in self.pools:
                self.overlay.abort(rid)  # the worker is gone (or its pool no longer configured)
                continue
            r = current[rid]
            replica = ReplicaInfo(id=rid, pool=p.from_pool, state=r.state, since_s=r.since_s, load=r.load)
            try:
                self._flip_recorded(replica, RoleFlip(p.from_pool, p.to_pool, 1), p.home_target)
            except ActuationError as exc:
                log.warning(
                    "role_flip_resume_failed", replica=rid, from_pool=p.from_pool, to_pool=p.to_pool, error=str(exc)
                )
                continue
            log.info("role_flip_resumed", replica=rid, from_pool=p.from_pool, to_pool=p.to_pool)
            done.append(rid)
        return done

    def _flip_one(self, replica: ReplicaInfo, flip: RoleFlip) -> None:
        import requests

        drain = self.params.drain_timeout_s
        if drain is None:
            drain = float(getattr(self.pools[flip.from_pool], "drain_timeout_s", 600.0))
        values = {
            "replica": replica.id,
            "pool": flip.to_pool,
            "role": self._role(flip.to_pool),
            "from_pool": flip.from_pool,
            "to_pool": flip.to_pool,
            "drain_timeout_s": f"{drain:g}",
            "endpoint": self.params.endpoints.get(replica.id, replica.id),
        }
        url = Template(self.params.url).substitute(values)
        body = json.loads(Template(self.params.body).substitute(values))
        if self.params.dry_run:
            self.calls.would(flip.from_pool, "flip_role", replica=replica.id, url=url, body=body)
            return

        def once() -> None:
            try:
                resp = self._session.request(self.params.method, url, json=body, timeout=self.params.timeout_s)
            except requests.RequestException as exc:
                raise ActuationError(f"http_role_flip {url}: {exc}", ErrorClass.TRANSIENT) from None
            if resp.status_code >= 400:
                text = resp.text[:300]
                raise ActuationError(
                    f"http_role_flip {url}: {resp.status_code} {text}", classify_http_status(resp.status_code, text)
                )

        retrying(once, self._retry, backend=BACKEND, op="flip_role", pool=flip.from_pool)
