# ruff: noqa: PLC0415 - requests is imported lazily
"""Role flips on SGLang engines: take the worker out of the router, drain it to idle, ``/pd_role_switch``, put it
back under its new role.

SGLang engines started with ``--enable-pd-role-switch`` (PD disaggregation mode) serve
``POST /pd_role_switch {"new_role": "prefill" | "decode"}`` and answer ``{"success", "message", "old_role",
"new_role"}``. The engine refuses while it holds work (``"instance is not idle"``): the switch tears down and
rebuilds its disaggregation state in place, keeping the weights. So the flip of one worker is:

1. **stop routing**: the router (SGLang Model Gateway, ``router_url``) forgets the worker
   (``DELETE /workers/<url>``, templates configurable), so no new request reaches it;
2. **drain**: poll the engine's ``/metrics`` until ``sglang:num_running_reqs`` and ``sglang:num_queue_reqs`` are
   both 0, at most the source pool's ``drain_timeout_s``;
3. **switch**: ``POST <worker>/pd_role_switch`` (retried while the engine still says it is not idle, within the
   same deadline);
4. **route again**: the router learns the worker under its new role (``POST /workers`` with ``worker_type`` and,
   for prefill, its ``bootstrap_port``).

A drain that does not reach idle in time aborts the flip: the worker is put back in the router under its old role
and the flip fails with ``drain_timeout`` and the in-flight count it still held (nothing is cut). A switch the
engine refuses for another reason fails the flip the same way, and a switch that leaves the engine unhealthy
(``"restart required"``) is reported as such and the worker is not routed again. Counts stay with the base
scaler, as for ``http_role_flip`` (:mod:`pdscale.actuators.http_flip`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from string import Template
from typing import Any
from urllib.parse import quote

import structlog
from pydantic import Field

from pdscale.actuators.base import classify_http_status
from pdscale.actuators.drain import inflight_from_metrics
from pdscale.actuators.http_flip import HttpRoleFlipActuator, HttpRoleFlipParams
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, ReplicaInfo, RoleFlip

__all__ = ["SglangRoleSwitchActuator", "SglangRoleSwitchParams", "engine_load"]

log = structlog.get_logger(__name__)

BACKEND = "sglang_role_switch"
_LOAD_METRICS = ("sglang:num_running_reqs", "sglang:num_queue_reqs")


class SglangRoleSwitchParams(HttpRoleFlipParams):
    """``actuator.params`` for ``sglang_role_switch`` (plus ``http_role_flip``'s ``base``, ``endpoints``, ``roles``)."""

    url: str = "$endpoint/pd_role_switch"
    body: str = '{"new_role": "$role"}'
    router_url: str | None = None
    """The SGLang Model Gateway (router) base URL; None: no router step (the deployment routes by itself)."""
    router_remove: str = "DELETE $router/workers/$endpoint_quoted"
    """``METHOD URL`` template that stops routing to a worker."""
    router_add: str = "POST $router/workers"
    """``METHOD URL`` template that routes to a worker again; the JSON body is ``router_add_body``."""
    router_add_body: str = '{"url": "$endpoint", "worker_type": "$role"$bootstrap}'
    bootstrap_ports: dict[str, int] = Field(default_factory=dict)
    """Replica id to the disaggregation bootstrap port it serves as prefill (sent as ``bootstrap_port``)."""
    metrics_url: str = "$endpoint/metrics"
    """Template of the engine's Prometheus endpoint (``$endpoint``, ``$replica``)."""
    poll_interval_s: float = Field(1.0, gt=0)


def engine_load(metrics_text: str) -> float:
    """Running plus queued requests in an SGLang engine's Prometheus text (0 when none is reported)."""
    names = (*_LOAD_METRICS, *(m.replace(":", "_") for m in _LOAD_METRICS))
    load = inflight_from_metrics(metrics_text, names)
    return 0.0 if math.isnan(load) else load


class SglangRoleSwitchActuator(HttpRoleFlipActuator):
    """Actuator + SupportsRoleFlip for SGLang: counts through a base scaler, flips by drain + ``/pd_role_switch``."""

    params: SglangRoleSwitchParams
    params_model = SglangRoleSwitchParams
    backend = BACKEND

    def __init__(
        self,
        pools: Mapping[str, Any],
        params: Mapping[str, Any],
        env: Any = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(pools, params, env)
        self._clock, self._sleep = clock, sleep

    # -- HTTP helpers --------------------------------------------------------------------------------
    def _request(self, method: str, url: str, body: Any = None) -> Any:
        import requests

        try:
            resp = self._session.request(method, url, json=body, timeout=self.params.timeout_s)
        except requests.RequestException as exc:
            raise ActuationError(f"{BACKEND} {method} {url}: {exc}", ErrorClass.TRANSIENT) from None
        return resp

    def _router(self, template: str, values: Mapping[str, str], body: Any = None, *, gone_ok: bool = False) -> None:
        method, _, url = Template(template).substitute(values).partition(" ")
        resp = self._request(method, url.strip(), body)
        if resp.status_code >= 400 and not (gone_ok and resp.status_code == 404):  # removal: already gone
            text = resp.text[:300]
            raise ActuationError(
                f"{BACKEND} router {method} {url}: {resp.status_code} {text}",
                classify_http_status(resp.status_code, text),
            )

    def _load(self, values: Mapping[str, str]) -> float:
        url = Template(self.params.metrics_url).substitute(values)
        resp = self._request("GET", url)
        if resp.status_code >= 400:
            raise ActuationError(f"{BACKEND} GET {url}: {resp.status_code}", ErrorClass.TRANSIENT)
        return engine_load(resp.text)

    def _values(self, replica: ReplicaInfo, flip: RoleFlip, pool: str) -> dict[str, str]:
        endpoint = self.params.endpoints.get(replica.id, replica.id)
        port = self.params.bootstrap_ports.get(replica.id)
        role = self._role(pool)
        return {
            "replica": replica.id,
            "endpoint": endpoint,
            "endpoint_quoted": quote(endpoint, safe=""),
            "router": (self.params.router_url or "").rstrip("/"),
            "role": role,
            "pool": pool,
            "from_pool": flip.from_pool,
            "to_pool": flip.to_pool,
            "bootstrap": f', "bootstrap_port": {port}' if port is not None and role == "prefill" else "",
        }

    def _route(self, replica: ReplicaInfo, flip: RoleFlip, pool: str) -> None:
        if self.params.router_url is None:
            return
        import json

        values = self._values(replica, flip, pool)
        body = json.loads(Template(self.params.router_add_body).substitute(values))
        self._router(self.params.router_add, values, body)

    # -- the flip ------------------------------------------------------------------------------------
    def _flip_one(self, replica: ReplicaInfo, flip: RoleFlip) -> None:
        import json

        drain = self.params.drain_timeout_s
        if drain is None:
            drain = float(getattr(self.pools[flip.from_pool], "drain_timeout_s", 600.0))
        old, new = self._values(replica, flip, flip.from_pool), self._values(replica, flip, flip.to_pool)
        url = Template(self.params.url).substitute(new)
        body = json.loads(Template(self.params.body).substitute(new))
        if self.params.dry_run:
            self.calls.would(flip.from_pool, "pd_role_switch", replica=replica.id, url=url, body=body)
            return
        if self.params.router_url is not None:
            self._router(self.params.router_remove, old, gone_ok=True)
        deadline = self._clock() + drain
        load = self._wait_idle(new, deadline)
        while True:
            if load > 0:
                self._abort(replica, flip, f"drain_timeout: {load:g} requests still in flight after {drain:g} s")
            resp = self._request("POST", url, body)
            answer = _json(resp)
            if resp.status_code < 400 and answer.get("success", True):
                break
            message = str(answer.get("message") or resp.text[:300])
            if "not idle" in message and self._clock() < deadline:
                self._sleep(self.params.poll_interval_s)
                load = self._wait_idle(new, deadline)
                continue
            if "restart" in message or "unhealthy" in message:
                raise ActuationError(
                    f"{BACKEND} {replica.id}: the engine is unhealthy after pd_role_switch ({message}); "
                    "it stays out of the router until restarted",
                    ErrorClass.PERMANENT,
                )
            self._abort(replica, flip, f"pd_role_switch refused: {message}")
        self._route(replica, flip, flip.to_pool)

    def _wait_idle(self, values: Mapping[str, str], deadline: float) -> float:
        """Poll until the engine holds no running or queued request, or the deadline; the last load seen."""
        while True:
            load = self._load(values)
            if load <= 0 or self._clock() >= deadline:
                return load
            self._sleep(min(self.params.poll_interval_s, max(0.0, deadline - self._clock())))

    def _abort(self, replica: ReplicaInfo, flip: RoleFlip, why: str) -> None:
        """Route the worker again under its old role and fail the flip (nothing was cut)."""
        self._route(replica, flip, flip.from_pool)
        log.warning("role_flip_aborted", replica=replica.id, from_pool=flip.from_pool, to_pool=flip.to_pool, why=why)
        raise ActuationError(f"{BACKEND} {replica.id} {flip.from_pool}->{flip.to_pool}: {why}", ErrorClass.TRANSIENT)


def _json(resp: Any) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
