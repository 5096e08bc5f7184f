# ruff: noqa: PLC0415 - requests is imported lazily, like every actuator's client
"""Ray Serve actuator: ``num_replicas`` of named deployments through the dashboard's REST API.

Reads ``GET /api/serve/applications/`` (each application's applied config and per-deployment replica states),
changes only ``num_replicas`` of the pool's deployment, and PUTs the whole applied config back, which Ray Serve
applies in place (replicas of unchanged deployments keep running). A deployment with its own
``autoscaling_config`` is refused: two owners of one replica count fight. ``DEPLOY_FAILED`` is reported with
Ray's message as a permanent error.

Drain: every write also sets the deployment's ``graceful_shutdown_timeout_s`` to the pool's ``drain_timeout_s``
(a lightweight update, no restart), then reads the applied config back to verify it; before a scale-down whose
replicas run with another timeout, that update goes alone first and pdscale waits until the replicas run with it.
On a scale-down Ray Serve itself stops starting replicas first, stops routing to the replicas it stops (STOPPING)
and lets their in-flight requests finish for up to that timeout, checking every ``graceful_shutdown_wait_loop_s``.
Ray picks the victims; a request still running at the timeout is cut by Ray. With ``params.metrics_url`` pdscale
follows the replicas Ray stops and counts those requests (:mod:`pdscale.actuators.ray_serve_drain`): the outcome
then says ``drain_timeout; N in-flight requests cut``, as the other actuators' do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pdscale.actuators.base import (
    ActuatorParams,
    CallLog,
    ExternalChangeDetector,
    classify_http_status,
    parse_params,
    parse_pool_addresses,
    retrying,
    unknown_pool,
)
from pdscale.actuators.ray_serve_drain import watch_scale_down
from pdscale.controller.core.protocols import ActuationError, DrainResult
from pdscale.controller.core.types import ErrorClass, ReplicaInfo, ReplicaState
from pdscale.controller.runtime.settings import SecretRef

__all__ = ["RayServeActuator", "RayServeParams", "RayServePoolAddress", "replica_state"]

BACKEND = "ray_serve"
APPS_PATH = "/api/serve/applications/"

_STATES: Mapping[str, ReplicaState] = {
    "STARTING": ReplicaState.STARTING,
    "UPDATING": ReplicaState.STARTING,
    "RECOVERING": ReplicaState.STARTING,
    "PENDING_MIGRATION": ReplicaState.DRAINING,
    "RUNNING": ReplicaState.READY,
    "STOPPING": ReplicaState.DRAINING,
    "STOPPED": ReplicaState.STOPPED,
}


def replica_state(ray_state: str) -> ReplicaState:
    """Ray Serve's replica state as a pdscale lifecycle state (unknown states count as starting)."""
    return _STATES.get(ray_state.upper(), ReplicaState.STARTING)


class RayServePoolAddress(BaseModel):
    """``pools[].actuator`` for Ray Serve: which deployment of which application."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    application: str = Field(min_length=1)
    deployment: str = Field(min_length=1)


class RayServeParams(ActuatorParams):
    """``actuator.params`` for Ray Serve."""

    address: str = "http://127.0.0.1:8265"
    """The Ray dashboard URL."""
    token: SecretRef | None = None
    """Bearer token; when absent, ``token_file`` is used if it exists."""
    token_file: Path | None = Field(default_factory=lambda: Path.home() / ".ray" / "auth_token")
    graceful_shutdown: bool = True
    """Set each written deployment's graceful_shutdown_timeout_s to the pool's drain_timeout_s (and verify it)."""
    grace_wait_s: float = Field(60.0, gt=0)
    """How long a scale-down waits for the replicas to run with the new graceful shutdown timeout first."""
    metrics_url: str | None = None
    """Ray's metrics on the node of a replica (``$node_ip``), e.g. ``http://$node_ip:8080/metrics``: a
    scale-down then follows the replicas Ray stops and counts the requests cut at the timeout."""
    stop_poll_s: float = Field(0.5, gt=0)
    stop_wait_margin_s: float = Field(10.0, ge=0)
    """How long past the graceful shutdown timeout a scale-down follows the stopping replicas."""


class RayServeActuator:
    """Scales Ray Serve deployments in place; see the module docstring."""

    requires: tuple[str, ...] = ("requests",)
    """Modules this actuator imports when built; ``pdscale check-config`` names the extra that installs them."""
    extra = "ray"

    @staticmethod
    def check_settings(pools: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """Validate the params and every pool's ``actuator`` block without connecting (``check-config``)."""
        parse_params(RayServeParams, params, BACKEND)
        parse_pool_addresses(RayServePoolAddress, pools, BACKEND)

    def __init__(self, pools: Mapping[str, Any], params: Mapping[str, Any], env: Any = None) -> None:
        import requests

        self.params = parse_params(RayServeParams, params, BACKEND)
        self.addresses = parse_pool_addresses(RayServePoolAddress, pools, BACKEND)
        self._drain_timeout = {
            name: float(
                spec.get("drain_timeout_s", 600.0)
                if isinstance(spec, Mapping)
                else getattr(spec, "drain_timeout_s", 600.0)
            )
            for name, spec in pools.items()
        }
        self.calls = CallLog(BACKEND, dry_run=self.params.dry_run)
        self.external = ExternalChangeDetector(BACKEND)
        self._drain_results: dict[str, DrainResult] = {}
        self._retry = self.params.retry_policy()
        self._session = requests.Session()
        token = self._token()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        del env

    def _token(self) -> str | None:
        p = self.params
        if p.token is not None:
            return p.token.resolve()
        if p.token_file is not None and os.environ.get("RAY_AUTH_MODE", "") != "disabled":
            try:
                return p.token_file.read_text(encoding="utf-8").strip() or None
            except OSError:
                return None
        return None

    def close(self) -> None:
        """Release the HTTP session."""
        self._session.close()

    # -- HTTP ------------------------------------------------------------------------------------------
    def _request(self, method: str, pool: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        import requests

        url = self.params.address.rstrip("/") + APPS_PATH

        def once() -> dict[str, Any]:
            try:
                resp = self._session.request(method, url, json=body, timeout=self.params.timeout_s)
            except requests.RequestException as exc:
                raise ActuationError(f"ray_serve {method} {url}: {exc}", ErrorClass.TRANSIENT) from None
            if resp.status_code >= 400:
                text = resp.text[:500]
                raise ActuationError(
                    f"ray_serve {method} {url}: {resp.status_code} {text}",
                    classify_http_status(resp.status_code, text),
                )
            if not resp.content:
                return {}
            got = resp.json()
            return got if isinstance(got, dict) else {}

        return retrying(once, self._retry, backend=BACKEND, op=method.lower(), pool=pool)

    def _status(self, pool: str) -> tuple[dict[str, Any], dict[str, Any], RayServePoolAddress]:
        """(whole GET answer, the pool's application status, its address)."""
        try:
            addr = self.addresses[pool]
        except KeyError:
            raise unknown_pool(BACKEND, pool, self.addresses) from None
        got = self._request("GET", pool)
        app = (got.get("applications") or {}).get(addr.application)
        if app is None:
            names = ", ".join(sorted(got.get("applications") or {})) or "(none)"
            raise ActuationError(
                f"ray_serve pool {pool}: application {addr.application!r} not found; running: {names}",
                ErrorClass.PERMANENT,
            )
        if addr.deployment not in (app.get("deployments") or {}) and not _config_entry(app, addr.deployment):
            names = ", ".join(sorted(app.get("deployments") or {})) or "(none)"
            raise ActuationError(
                f"ray_serve pool {pool}: deployment {addr.deployment!r} not in application "
                f"{addr.application!r}; deployments: {names}",
                ErrorClass.PERMANENT,
            )
        return got, app, addr

    # -- Actuator protocol -------------------------------------------------------------------------------
    def target_size(self, pool: str) -> int:
        """``num_replicas`` in the applied config (else the controller's target)."""
        with self.calls.call(pool, "target_size") as extra:
            _, app, addr = self._status(pool)
            n = _current(app, addr.deployment)
            extra["replicas"] = n
        self.external.observe(pool, n)
        return n

    def set_target(self, pool: str, replicas: int) -> None:
        """Change only this deployment's ``num_replicas`` and PUT the applied config back (in place)."""
        if replicas < 0:
            raise ActuationError(f"ray_serve: negative target {replicas} for {pool}", ErrorClass.PERMANENT)
        with self.calls.call(pool, "set_target", replicas=replicas) as extra:
            got, app, addr = self._status(pool)
            if str(app.get("status")) == "DEPLOY_FAILED":
                raise ActuationError(
                    f"ray_serve application {addr.application!r} is DEPLOY_FAILED: {app.get('message', '')}",
                    ErrorClass.PERMANENT,
                )
            entry = _config_entry(app, addr.deployment)
            if entry is not None and (entry.get("autoscaling_config") or entry.get("num_replicas") == "auto"):
                raise ActuationError(
                    f"ray_serve deployment {addr.deployment!r} has its own autoscaling_config; remove it so "
                    "pdscale is the only owner of num_replicas (or do not configure this pool for pdscale)",
                    ErrorClass.PERMANENT,
                )
            current = _current(app, addr.deployment)
            if current == replicas:
                extra["result"] = "unchanged"
                self.external.applied_now(pool, replicas)
                return
            if self.params.dry_run:
                self.calls.would(pool, "set_target", current=current, replicas=replicas)
                extra["result"] = "dry_run"
                return
            grace = self._drain_timeout.get(pool, 600.0) if self.params.graceful_shutdown else None
            if grace is not None and replicas < current and self.graceful_shutdown_s(pool) != grace:
                got = self._apply_grace_first(pool, got, addr, current, grace)
            ready = {
                str(r.get("replica_id"))
                for r in ((got.get("applications") or {}).get(addr.application, {}).get("deployments") or {})
                .get(addr.deployment, {})
                .get("replicas")
                or []
                if str(r.get("state", "")).upper() == "RUNNING"
            }
            self._request("PUT", pool, _with_replicas(got, addr, replicas, grace))
            self.external.applied_now(pool, replicas)
            extra["previous"] = current
            if grace is not None:
                extra["graceful_shutdown_timeout_s"] = grace
                self._verify_grace(pool, grace)
            if replicas < current and self.params.metrics_url is not None:
                bound = grace if grace is not None else (self.graceful_shutdown_s(pool) or 20.0)
                res = watch_scale_down(self, pool, addr, bound, ready, replicas)
                self._drain_results[pool] = res
                extra["drain"] = res.summary()

    def take_drain_result(self, pool: str) -> DrainResult | None:
        """What the last counted scale-down of ``pool`` did (drained, cut at the timeout), once."""
        return self._drain_results.pop(pool, None)

    def _apply_grace_first(
        self, pool: str, got: Mapping[str, Any], addr: RayServePoolAddress, current: int, grace: float
    ) -> dict[str, Any]:
        """Before a scale-down, the running replicas must already carry the drain bound (Ray stops a replica with
        the config it runs): PUT it alone and wait until every replica runs with it."""
        self._request("PUT", pool, _with_replicas(got, addr, current, grace))
        deadline = time.monotonic() + self.params.grace_wait_s
        while time.monotonic() < deadline:
            fresh, app, _ = self._status(pool)
            dep = (app.get("deployments") or {}).get(addr.deployment) or {}
            states = {str(r.get("state")) for r in dep.get("replicas") or []}
            if self.graceful_shutdown_s(pool) == grace and states <= {"RUNNING"}:
                return fresh
            time.sleep(0.5)
        raise ActuationError(
            f"ray_serve deployment {addr.deployment!r}: replicas did not take graceful_shutdown_timeout_s={grace:g} "
            f"within {self.params.grace_wait_s:g}s; not scaling down (requests would be cut)",
            ErrorClass.TRANSIENT,
        )

    def _verify_grace(self, pool: str, grace: float) -> None:
        """The applied config must carry the drain bound, else a scale-down would cut requests at Ray's default."""
        _, app, addr = self._status(pool)
        entry = _config_entry(app, addr.deployment) or {}
        if entry.get("graceful_shutdown_timeout_s") != grace:
            raise ActuationError(
                f"ray_serve deployment {addr.deployment!r}: graceful_shutdown_timeout_s is "
                f"{entry.get('graceful_shutdown_timeout_s')!r} after the update, not {grace:g}; retrying",
                ErrorClass.TRANSIENT,
            )

    def graceful_shutdown_s(self, pool: str) -> float | None:
        """The graceful shutdown timeout Ray Serve runs the pool's deployment with now (its live config)."""
        _, app, addr = self._status(pool)
        live = ((app.get("deployments") or {}).get(addr.deployment) or {}).get("deployment_config") or {}
        got = live.get("graceful_shutdown_timeout_s")
        return float(got) if isinstance(got, int | float) else None

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """The deployment's replicas: STARTING/UPDATING/RECOVERING starting, RUNNING ready, STOPPING draining."""
        with self.calls.call(pool, "replicas") as extra:
            _, app, addr = self._status(pool)
            dep = (app.get("deployments") or {}).get(addr.deployment) or {}
            out = []
            for r in dep.get("replicas") or []:
                state = replica_state(str(r.get("state", "")))
                if state is ReplicaState.STOPPED:
                    continue
                rid = str(r.get("replica_id") or r.get("actor_name") or r.get("actor_id"))
                out.append(ReplicaInfo(id=rid, pool=pool, state=state, since_s=float(r.get("start_time_s") or 0.0)))
            extra["count"] = len(out)
            return out


def _config_entry(app: Mapping[str, Any], deployment: str) -> dict[str, Any] | None:
    cfg = app.get("deployed_app_config") or {}
    for d in cfg.get("deployments") or []:
        if d.get("name") == deployment:
            return dict(d)
    return None


def _current(app: Mapping[str, Any], deployment: str) -> int:
    entry = _config_entry(app, deployment)
    if entry is not None and isinstance(entry.get("num_replicas"), int):
        return int(entry["num_replicas"])
    dep = (app.get("deployments") or {}).get(deployment) or {}
    if isinstance(dep.get("target_num_replicas"), int):
        return int(dep["target_num_replicas"])
    cfg_n = (dep.get("deployment_config") or {}).get("num_replicas")
    return int(cfg_n) if isinstance(cfg_n, int) else len(dep.get("replicas") or [])


def _with_replicas(
    got: Mapping[str, Any], addr: RayServePoolAddress, replicas: int, grace_s: float | None = None
) -> dict[str, Any]:
    """The declarative config of every application as applied, with one ``num_replicas`` changed."""
    apps = []
    for name, app in (got.get("applications") or {}).items():
        cfg = dict(app.get("deployed_app_config") or {})
        if not cfg:
            raise ActuationError(
                f"ray_serve application {name!r} was not deployed from a config (serve.run?); pdscale scales only "
                "applications deployed declaratively (serve deploy / the REST API), else the PUT would remove it",
                ErrorClass.PERMANENT,
            )
        if name == addr.application:
            deps = [dict(d) for d in cfg.get("deployments") or []]
            for d in deps:
                if d.get("name") == addr.deployment:
                    d["num_replicas"] = replicas
                    break
            else:
                d = {"name": addr.deployment, "num_replicas": replicas}
                deps.append(d)
            if grace_s is not None:
                d["graceful_shutdown_timeout_s"] = grace_s
            cfg["deployments"] = deps
        apps.append(cfg)
    body: dict[str, Any] = {"applications": apps}
    for key in ("proxy_location", "http_options", "grpc_options", "target_capacity"):
        if got.get(key) is not None:
            body[key] = got[key]
    return body
