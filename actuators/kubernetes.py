"""Kubernetes actuator: replica counts through the scale subresource, with the official client.

Targets: Deployments, StatefulSets, LeaderWorkerSets (leaderworkerset.x-k8s.io/v1) and any custom resource that
serves ``/scale`` (``group``/``version``/``plural`` per pool, e.g. Dynamo's DynamoGraphDeploymentScalingAdapter).
Writes are a PUT of the Scale with the resourceVersion just read (409 Conflict: re-read and retry), so a
concurrent edit is never overwritten blindly. Replicas come from the pods the Scale's ``status.selector``
selects (terminating pods are draining), or from the Scale's status when it has no selector.

A scale-down cancels starting pods first, then chooses (never one ``spared``), drains and removes exactly the
ready pods it names (``kubernetes_drain``); each applied scale, drain and flip is recorded as a Kubernetes Event.
"""

# ruff: noqa: PLC0415 - the kubernetes client is imported lazily, so pdscale runs without it
from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pdscale.actuators.base import (
    ActuatorParams,
    CallLog,
    ExternalChangeDetector,
    ExternalChangeReport,
    classify_http_status,
    parse_params,
    parse_pool_addresses,
    retrying,
    unknown_pool,
)
from pdscale.actuators.drain import Drainer, EngineDrain, pool_drain_timeout_s
from pdscale.actuators.kubernetes_drain import drain_event, record_event, shrink, watch_external_changes
from pdscale.controller.core.protocols import ActuationError, DrainResult
from pdscale.controller.core.types import ErrorClass, ReplicaInfo, ReplicaState

__all__ = [
    "CUSTOM_RESOURCE_VERBS",
    "DELETION_COST_ANNOTATION",
    "RBAC_RULES",
    "KubernetesActuator",
    "KubernetesParams",
    "KubernetesPoolAddress",
    "RbacRule",
    "rbac_rules_for_custom",
]

log = structlog.get_logger(__name__)

BACKEND = "kubernetes"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"

RbacRule = tuple[str, str, tuple[str, ...]]
"""(apiGroup, resource, verbs)."""

RBAC_RULES: tuple[RbacRule, ...] = (
    ("apps", "deployments/scale", ("get", "patch", "update")),
    ("apps", "statefulsets/scale", ("get", "patch", "update")),
    ("leaderworkerset.x-k8s.io", "leaderworkersets/scale", ("get", "patch", "update")),
    ("apps", "deployments", ("get", "list", "watch")),
    ("apps", "statefulsets", ("get", "list", "watch")),
    ("leaderworkerset.x-k8s.io", "leaderworkersets", ("get", "list", "watch")),
    ("", "pods", ("get", "list", "patch")),
    ("", "events", ("create",)),
)
"""Exactly the API calls this actuator makes on built-in kinds (deploy/rbac-requirements.yaml grants them)."""

CUSTOM_RESOURCE_VERBS: Mapping[str, tuple[str, ...]] = {
    "parent": ("get", "list", "watch"),
    "scale": ("get", "patch", "update"),
}
"""Verbs needed on each configured custom resource (``parent``) and its ``/scale``."""


def rbac_rules_for_custom(group: str, plural: str) -> tuple[RbacRule, RbacRule]:
    """The two rules a custom scale target needs."""
    return (group, f"{plural}/scale", CUSTOM_RESOURCE_VERBS["scale"]), (group, plural, CUSTOM_RESOURCE_VERBS["parent"])


_BUILTIN: Mapping[str, tuple[str, str, str]] = {
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "LeaderWorkerSet": ("leaderworkerset.x-k8s.io", "v1", "leaderworkersets"),
}


class KubernetesPoolAddress(BaseModel):
    """Where one pool lives: ``pools[].actuator`` for the kubernetes actuator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: str = "Deployment"
    """Deployment, StatefulSet, LeaderWorkerSet, or a custom kind (then group, version and plural are required)."""
    namespace: str | None = None
    group: str | None = None
    version: str | None = None
    plural: str | None = None
    label_selector: str | None = None
    """Overrides the Scale's status.selector for listing the pool's pods."""
    drain: EngineDrain | None = None
    """Where each pod's engine reports in-flight requests (``$address`` is the pod IP); None: no wait."""
    unroute_label: str | None = None
    """A pod label the pool's Service selects on; removed from a pod before it drains (not in the selector!)."""
    victims: Literal["deletion_cost", "highest_ordinal"] | None = None
    """How the workload picks pods to remove; default: highest_ordinal for StatefulSet/LWS, else deletion_cost."""

    @model_validator(mode="after")
    def _custom_needs_gvr(self) -> KubernetesPoolAddress:
        if self.kind not in _BUILTIN and not (self.group and self.version and self.plural):
            raise ValueError(
                f"kind {self.kind!r} is not built in ({', '.join(_BUILTIN)}); give group, version and plural"
            )
        return self

    def gvr(self) -> tuple[str, str, str]:
        """(group, version, plural)."""
        if self.kind in _BUILTIN and not self.plural:
            return _BUILTIN[self.kind]
        assert self.group is not None
        assert self.version is not None
        assert self.plural is not None
        return self.group, self.version, self.plural


class KubernetesParams(ActuatorParams):
    """``actuator.params`` for the kubernetes actuator."""

    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    """None: in-cluster when KUBERNETES_SERVICE_HOST is set and no kubeconfig is given."""
    namespace: str = "default"
    field_manager: str = "pdscale"
    write: Literal["replace", "patch"] = "replace"
    """replace: PUT with resourceVersion (409 re-read and retry); patch: merge patch of spec.replicas."""
    conflict_retries: int = Field(5, ge=0, le=20)
    deletion_cost: bool = False
    """Annotate pods with pod-deletion-cost by load before a Deployment scales down."""
    events: bool = True
    """Record a core/v1 Event on the scaled object for each applied scale, drain and flip."""
    load_annotation: str | None = None
    """Pod annotation holding a per-pod load number (else ``env.resources['pod_load'](pool, pod)``, else equal)."""


class KubernetesActuator:
    """Scales pools through ``/scale``; see the module docstring."""

    requires: tuple[str, ...] = ("kubernetes",)
    """Modules imported when built; ``pdscale check-config`` names the extra that installs them."""
    extra = "kubernetes"

    @staticmethod
    def check_settings(pools: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """Validate the params and every pool's ``actuator`` block without connecting (``check-config``)."""
        parse_params(KubernetesParams, params, BACKEND)
        parse_pool_addresses(KubernetesPoolAddress, pools, BACKEND)

    def __init__(self, pools: Mapping[str, Any], params: Mapping[str, Any], env: Any = None) -> None:
        self.params = parse_params(KubernetesParams, params, BACKEND)
        self.addresses = parse_pool_addresses(KubernetesPoolAddress, pools, BACKEND)
        resources = getattr(env, "resources", {}) or {}
        self._pod_load: Callable[[str, str], float] | None = resources.get("pod_load")
        self._engine_url: Callable[[str, str], str] | None = resources.get("engine_url")
        self._drain_timeout = {name: pool_drain_timeout_s(spec) for name, spec in pools.items()}
        self.drainer = Drainer(BACKEND)
        self._drain_results: dict[str, DrainResult] = {}
        self.spared: dict[str, frozenset[str]] = {}  # per pool, pods serving another pool now (role flips)
        self._uids: dict[str, str] = {}
        self.calls = CallLog(BACKEND, dry_run=self.params.dry_run)
        self.external = ExternalChangeDetector(BACKEND)
        self._retry = self.params.retry_policy()
        self._api_client = resources.get("kubernetes_api_client") or self._connect()
        from kubernetes import client

        # Typed as Any: the call shapes used here are the same across client generations (29 to 37).
        self._apps: Any = client.AppsV1Api(self._api_client)
        self._core: Any = client.CoreV1Api(self._api_client)
        self._custom: Any = client.CustomObjectsApi(self._api_client)

    def _connect(self) -> Any:
        from kubernetes import client, config

        p = self.params
        in_cluster = p.in_cluster
        if in_cluster is None:
            in_cluster = p.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if in_cluster:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                return client.ApiClient(cfg)
            return config.new_client_from_config(config_file=p.kubeconfig, context=p.context)  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            raise ActuationError(f"kubernetes: cannot load credentials: {exc}", ErrorClass.PERMANENT) from None

    def close(self) -> None:
        """Release the HTTP pool."""
        self._api_client.close()

    # -- raw calls -------------------------------------------------------------------------------
    def _addr(self, pool: str) -> KubernetesPoolAddress:
        try:
            return self.addresses[pool]
        except KeyError:
            raise unknown_pool(BACKEND, pool, self.addresses) from None

    def _ns(self, addr: KubernetesPoolAddress) -> str:
        return addr.namespace or self.params.namespace

    def _invoke(self, pool: str, op: str, fn: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        def once() -> Any:
            try:
                resp = fn()
            except ApiException as exc:
                message = _status_message(exc)
                cls = classify_http_status(int(exc.status or 0), message)
                if exc.status == 404:
                    cls = ErrorClass.PERMANENT
                error = _ConflictError if exc.status == 409 else ActuationError
                raise error(f"kubernetes {op} {pool}: {exc.status} {message}", cls) from None
            except HTTPError as exc:
                raise ActuationError(f"kubernetes {op} {pool}: {exc}", ErrorClass.TRANSIENT) from None
            return json.loads(resp.data) if resp.data else {}

        return retrying(once, self._retry, backend=BACKEND, op=op, pool=pool, retry_on=_retry_on)

    def _read_scale(self, pool: str) -> dict[str, Any]:
        a = self._addr(pool)
        ns, kw = self._ns(a), {"_preload_content": False, "_request_timeout": self.params.timeout_s}
        if a.kind == "Deployment" and not a.plural:
            return dict(
                self._invoke(pool, "get_scale", lambda: self._apps.read_namespaced_deployment_scale(a.name, ns, **kw))
            )
        if a.kind == "StatefulSet" and not a.plural:
            return dict(
                self._invoke(pool, "get_scale", lambda: self._apps.read_namespaced_stateful_set_scale(a.name, ns, **kw))
            )
        g, v, plural = a.gvr()
        return dict(
            self._invoke(
                pool,
                "get_scale",
                lambda: self._custom.get_namespaced_custom_object_scale(g, v, ns, plural, a.name, **kw),
            )
        )

    def _write_scale(self, pool: str, scale: dict[str, Any], replicas: int) -> dict[str, Any]:
        a = self._addr(pool)
        ns, fm = self._ns(a), self.params.field_manager
        kw: dict[str, Any] = {"_preload_content": False, "_request_timeout": self.params.timeout_s, "field_manager": fm}
        if self.params.write == "patch":
            body: Any = {"spec": {"replicas": replicas}}
            kw["_content_type"] = "application/merge-patch+json"
            verb = "patch"
        else:
            body = {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {
                    "name": a.name,
                    "namespace": ns,
                    "resourceVersion": scale.get("metadata", {}).get("resourceVersion"),
                },
                "spec": {"replicas": replicas},
            }
            verb = "replace"
        if a.kind in ("Deployment", "StatefulSet") and not a.plural:
            kind = "deployment" if a.kind == "Deployment" else "stateful_set"
            method = getattr(self._apps, f"{verb}_namespaced_{kind}_scale")
            return dict(self._invoke(pool, f"{verb}_scale", lambda: method(a.name, ns, body, **kw)))
        g, v, plural = a.gvr()
        method = getattr(self._custom, f"{verb}_namespaced_custom_object_scale")
        return dict(self._invoke(pool, f"{verb}_scale", lambda: method(g, v, ns, plural, a.name, body, **kw)))

    def _read_parent(self, pool: str) -> dict[str, Any]:
        a = self._addr(pool)
        ns, kw = self._ns(a), {"_preload_content": False, "_request_timeout": self.params.timeout_s}
        if a.kind == "Deployment" and not a.plural:
            return dict(self._invoke(pool, "get", lambda: self._apps.read_namespaced_deployment(a.name, ns, **kw)))
        if a.kind == "StatefulSet" and not a.plural:
            return dict(self._invoke(pool, "get", lambda: self._apps.read_namespaced_stateful_set(a.name, ns, **kw)))
        g, v, plural = a.gvr()
        return dict(
            self._invoke(pool, "get", lambda: self._custom.get_namespaced_custom_object(g, v, ns, plural, a.name, **kw))
        )

    def _pods(self, pool: str, selector: str) -> list[dict[str, Any]]:
        a = self._addr(pool)
        ns = self._ns(a)
        got = self._invoke(
            pool,
            "list_pods",
            lambda: self._core.list_namespaced_pod(
                ns, label_selector=selector, _preload_content=False, _request_timeout=self.params.timeout_s
            ),
        )
        return list(got.get("items") or [])

    # -- Actuator protocol --------------------------------------------------------------------------
    def target_size(self, pool: str) -> int:
        """The Scale's spec.replicas (whoever set it); an external change to our last write is reported."""
        with self.calls.call(pool, "target_size") as extra:
            replicas = int((self._read_scale(pool).get("spec") or {}).get("replicas") or 0)
            extra["replicas"] = replicas
        if self.external.applied.get(pool, replicas) != replicas and self.external.reported.get(pool) != replicas:
            self.external.observe(pool, replicas, by=self.replicas_owner(pool) or "")
        return replicas

    def replicas_owner(self, pool: str) -> str | None:
        """The field manager that last wrote spec.replicas (from the parent's managedFields), if recorded."""
        parent = self._read_parent(pool)
        for entry in (parent.get("metadata") or {}).get("managedFields") or []:
            if "f:replicas" in json.dumps(entry.get("fieldsV1") or {}):
                return str(entry.get("manager") or "")
        return None

    def external_change(self, pool: str) -> ExternalChangeReport | None:
        """Compare the backend's target with this actuator's last write, naming who changed it."""
        replicas = int((self._read_scale(pool).get("spec") or {}).get("replicas") or 0)
        if self.external.applied.get(pool, replicas) == replicas:
            return None
        return self.external.observe(pool, replicas, by=self.replicas_owner(pool) or "")

    def set_target(self, pool: str, replicas: int) -> None:
        """PUT the Scale (re-read on 409); no write when it already asks for ``replicas``."""
        if replicas < 0:
            raise ActuationError(f"kubernetes: negative target {replicas} for {pool}", ErrorClass.PERMANENT)
        with self.calls.call(pool, "set_target", replicas=replicas) as extra:
            removed: int | None = None
            for attempt in range(self.params.conflict_retries + 1):
                scale = self._read_scale(pool)
                current = int((scale.get("spec") or {}).get("replicas") or 0)
                if current == replicas:
                    extra["result"] = "unchanged"
                    self.external.applied_now(pool, replicas)
                    return
                if self.params.dry_run:
                    self.calls.would(pool, "set_target", current=current, replicas=replicas)
                    extra["result"] = "dry_run"
                    return
                write = replicas
                if replicas < current:
                    if removed is None:
                        if self.params.deletion_cost and self._addr(pool).kind == "Deployment":
                            self._annotate_deletion_cost(pool, scale)
                        removed = current - shrink(self, pool, scale, current, replicas)
                    write = max(replicas, current - removed)
                try:
                    self._write_scale(pool, scale, write)
                except _ConflictError:
                    if attempt < self.params.conflict_retries:
                        log.info("kubernetes_conflict_retry", pool=pool, attempt=attempt + 1)
                        continue
                    raise
                self.external.applied_now(pool, write)
                extra.update(previous=current, written=write)
                self._events_after(pool, current, write)
                return

    def _events_after(self, pool: str, current: int, write: int) -> None:
        res = self._drain_results.get(pool) if write < current else None
        if res is not None:
            drain_event(self, pool, res)
        record_event(self, pool, "SuccessfulRescale", f"New size: {write}; from: {current}; to: {write}; by pdscale")

    def take_drain_result(self, pool: str) -> DrainResult | None:
        """What the last scale-down of ``pool`` did (cancelled, drained, timed out), once."""
        return self._drain_results.pop(pool, None)

    def drain_timeout_s(self, pool: str) -> float:
        """The pool's ``drain_timeout_s``."""
        return self._drain_timeout.get(pool, 600.0)

    def object_uid(self, pool: str) -> str:
        """The scaled object's uid (for Events), read once."""
        if pool not in self._uids:
            self._uids[pool] = str((self._read_parent(pool).get("metadata") or {}).get("uid") or "")
        return self._uids[pool]

    def record_event(self, pool: str, reason: str, message: str) -> None:
        """A Normal Event on ``pool``'s scaled object (role flips record theirs through this)."""
        record_event(self, pool, reason, message)

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """Pods selected by the Scale's selector: ready, starting, or draining (terminating)."""
        with self.calls.call(pool, "replicas") as extra:
            scale = self._read_scale(pool)
            selector = self._addr(pool).label_selector or (scale.get("status") or {}).get("selector")
            if not selector:
                out = _from_status(pool, scale)
            else:
                out = [self._replica(pool, pod) for pod in self._pods(pool, str(selector))]
                out = [r for r in out if r.state is not ReplicaState.STOPPED]
            extra["count"] = len(out)
            return out

    def _replica(self, pool: str, pod: Mapping[str, Any]) -> ReplicaInfo:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        name = str(meta.get("name"))
        if meta.get("deletionTimestamp"):
            state = ReplicaState.DRAINING
        elif status.get("phase") in ("Succeeded", "Failed"):
            state = ReplicaState.STOPPED
        elif status.get("phase") == "Running" and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        ):
            state = ReplicaState.READY
        else:
            state = ReplicaState.STARTING
        return ReplicaInfo(id=name, pool=pool, state=state, load=self._load(pool, meta))

    def _load(self, pool: str, meta: Mapping[str, Any]) -> float:
        key = self.params.load_annotation
        if key:
            raw = (meta.get("annotations") or {}).get(key)
            try:
                return max(0.0, float(raw)) if raw is not None else 0.0
            except ValueError:
                log.warning("kubernetes_bad_load_annotation", pool=pool, pod=meta.get("name"), value=raw)
                return 0.0
        if self._pod_load is not None:
            return float(self._pod_load(pool, str(meta.get("name"))))
        return 0.0

    def _annotate_deletion_cost(self, pool: str, scale: Mapping[str, Any]) -> None:
        """Rank pods by load: the least loaded get the lowest deletion cost and go first."""
        selector = self._addr(pool).label_selector or (scale.get("status") or {}).get("selector")
        if not selector:
            return
        pods = [p for p in self._pods(pool, str(selector)) if not (p.get("metadata") or {}).get("deletionTimestamp")]
        ranked = sorted(pods, key=lambda p: (self._load(pool, p.get("metadata") or {}), p["metadata"]["name"]))
        ns = self._ns(self._addr(pool))
        for rank, pod in enumerate(ranked):
            name = pod["metadata"]["name"]
            cost = str(rank)
            if (pod["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION) == cost:
                continue
            body = {"metadata": {"annotations": {DELETION_COST_ANNOTATION: cost}}}
            self._patch_pod(pool, ns, name, body)

    def _patch_pod(self, pool: str, ns: str, name: str, body: Mapping[str, Any]) -> None:
        self._invoke(
            pool,
            "patch_pod",
            lambda: self._core.patch_namespaced_pod(
                name,
                ns,
                body,
                field_manager=self.params.field_manager,
                _content_type="application/strategic-merge-patch+json",
                _preload_content=False,
                _request_timeout=self.params.timeout_s,
            ),
        )

    def watch_external_changes(self, pool: str, timeout_s: float = 30.0) -> list[ExternalChangeReport]:
        """Watch the pool's parent object for ``timeout_s``; report each replica change nobody here made."""
        return watch_external_changes(self, pool, timeout_s)


def _from_status(pool: str, scale: Mapping[str, Any]) -> list[ReplicaInfo]:
    want = int((scale.get("spec") or {}).get("replicas") or 0)
    have = int((scale.get("status") or {}).get("replicas") or 0)
    out = [ReplicaInfo(id=f"{pool}-{i}", pool=pool, state=ReplicaState.READY) for i in range(min(want, have))]
    out += [ReplicaInfo(id=f"{pool}-{i}", pool=pool, state=ReplicaState.STARTING) for i in range(have, want)]
    out += [ReplicaInfo(id=f"{pool}-{i}", pool=pool, state=ReplicaState.DRAINING) for i in range(want, have)]
    return out


class _ConflictError(ActuationError):
    """409: the object changed since it was read; re-read, then write again."""


def _retry_on(exc: BaseException) -> bool:
    return (
        isinstance(exc, ActuationError)
        and not isinstance(exc, _ConflictError)
        and exc.error_class is ErrorClass.TRANSIENT
    )


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body is None:
        resp = getattr(exc, "http_resp", None) or getattr(exc, "response", None)
        body = getattr(resp, "data", None)
    if isinstance(body, bytes | str) and body:
        try:
            return str(json.loads(body).get("message") or body)
        except (ValueError, AttributeError):
            return str(body)
    return str(getattr(exc, "reason", "") or exc)
