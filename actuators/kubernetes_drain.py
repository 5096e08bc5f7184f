# ruff: noqa: PLC0415 - the kubernetes client is imported lazily
"""Scale-down and Events for the kubernetes actuator: cancel starting pods, drain chosen ready ones, then scale.

A scale-down of ``k`` replicas first lets go of up to ``k`` starting (not ready) pods: every workload controller
removes those before ready ones (ReplicaSets rank not-ready pods first). The rest are chosen among ready pods:

- ``deletion_cost`` (Deployments, and custom resources backed by a ReplicaSet, such as Dynamo's single-node
  components): the least-loaded ready pods; they get ``controller.kubernetes.io/pod-deletion-cost`` of the
  lowest int32 so the ReplicaSet removes exactly them;
- ``highest_ordinal`` (StatefulSets, LeaderWorkerSets): the controller removes the highest ordinals (whole
  groups for a LeaderWorkerSet), so those are the ones drained.

Each chosen pod stops getting new requests (its ``unroute_label`` is removed, so a Service that selects on it
stops sending there; and/or the engine's ``stop_path`` is POSTed), then its engine is polled until it has
nothing in flight or the pool's ``drain_timeout_s`` passed. Only then is ``/scale`` written. If a starting pod
became ready meanwhile, the target is lowered only by what was cancelled or drained; the rest waits for the next
call, so no ready pod is removed undrained.

Events (core/v1) are recorded on the scaled object for every applied scale, drain and flip, with a reason and
``from``/``to`` in the message, as the HPA does (``kubectl describe`` and ``kubectl get events`` show them).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from pdscale.actuators.base import ExternalChangeReport
from pdscale.actuators.drain import EngineDrain, EngineTarget, result
from pdscale.controller.core.protocols import ActuationError, DrainResult

if TYPE_CHECKING:
    from pdscale.actuators.kubernetes import KubernetesActuator

__all__ = ["MIN_DELETION_COST", "engine_url", "record_event", "shrink", "victim_strategy", "watch_external_changes"]

log = structlog.get_logger(__name__)

MIN_DELETION_COST = -2147483648
"""The lowest pod-deletion-cost (int32): the ReplicaSet removes these pods first among ready ones."""

_ORDINAL = re.compile(r"-(\d+)$")


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _active(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        p
        for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _ordinal(pod: Mapping[str, Any]) -> tuple[int, str]:
    name = str((pod.get("metadata") or {}).get("name"))
    m = _ORDINAL.search(name)
    return (int(m.group(1)) if m else -1, name)


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name"))


def victim_strategy(act: KubernetesActuator, pool: str) -> str:
    """How ``pool``'s workload chooses pods to remove."""
    a = act._addr(pool)
    if a.victims is not None:
        return a.victims
    return "highest_ordinal" if a.kind in ("StatefulSet", "LeaderWorkerSet") and not a.plural else "deletion_cost"


def engine_url(act: KubernetesActuator, pool: str, pod: Mapping[str, Any]) -> str:
    """The engine base URL of ``pod`` (``env.resources['engine_url']``, else the pool's ``drain.url``)."""
    name = _name(pod)
    if act._engine_url is not None:
        return str(act._engine_url(pool, name)).rstrip("/")
    cfg = act._addr(pool).drain or EngineDrain.model_validate({})
    return act.drainer.url_for(cfg, pool, name, str((pod.get("status") or {}).get("podIP") or name))


def shrink(act: KubernetesActuator, pool: str, scale: Mapping[str, Any], current: int, replicas: int) -> int:
    """Prepare a scale-down from ``current`` to ``replicas``; returns the target that is safe to write now."""
    addr = act._addr(pool)
    selector = addr.label_selector or (scale.get("status") or {}).get("selector")
    if not selector:
        act._drain_results[pool] = result(pool, 0, [], [], 0)
        return replicas  # no pods to choose from: the workload's controller decides alone
    active = _active(act._pods(pool, str(selector)))
    starting = [p for p in active if not _ready(p)]
    strategy = victim_strategy(act, pool)
    # Pods serving another pool now (role flips) are never chosen where pdscale chooses (not by ordinal).
    spared = act.spared.get(pool, frozenset()) if strategy == "deletion_cost" else frozenset()
    ready = [p for p in active if _ready(p) and _name(p) not in spared]
    k = current - replicas
    cancel = min(k, len(starting))
    d = min(k - cancel, len(ready))
    cfg = addr.drain
    targets = {_name(p): EngineTarget(_name(p), engine_url(act, pool, p)) for p in ready if cfg is not None}
    if strategy == "highest_ordinal":
        victims = sorted(ready, key=_ordinal, reverse=True)[:d]
    else:

        def load(p: Mapping[str, Any]) -> tuple[float, str]:
            if cfg is not None and _name(p) in targets:
                n = act.drainer.inflight(cfg, targets[_name(p)].url)
                return (math.inf if math.isnan(n) else n, _name(p))
            return (act._load(pool, p.get("metadata") or {}), _name(p))

        victims = sorted(ready, key=load)[:d]
    ns = act._ns(addr)
    names = [_name(p) for p in victims]
    drained: list[str] = []
    timed_out: list[str] = []
    cut = 0
    if victims and (addr.unroute_label or cfg is not None):
        for name in names:
            if addr.unroute_label:
                act._patch_pod(pool, ns, name, {"metadata": {"labels": {addr.unroute_label: None}}})
        if cfg is not None:
            drained, timed_out, cut = act.drainer.drain(
                cfg, pool, [targets[n] for n in names], act.drain_timeout_s(pool)
            )
        else:
            drained = names
    else:
        drained = names
    if strategy == "deletion_cost":
        for name in names:
            act._patch_pod(pool, ns, name, {"metadata": {"annotations": {_cost_key(): str(MIN_DELETION_COST)}}})
    # A starting pod that became ready while others drained would be removed instead of a drained one: lower the
    # target only by what is still starting plus what was drained.
    still_starting = sum(1 for p in _active(act._pods(pool, str(selector))) if not _ready(p)) if cancel else 0
    cancelled = min(cancel, still_starting)
    write = current - cancelled - len(victims)
    act._drain_results[pool] = result(pool, cancelled, drained, timed_out, cut, deferred=write - replicas)
    if write > replicas:
        log.info("kubernetes_shrink_deferred", pool=pool, asked=replicas, writing=write)
    return max(write, replicas)


def _cost_key() -> str:
    from pdscale.actuators.kubernetes import DELETION_COST_ANNOTATION

    return DELETION_COST_ANNOTATION


def record_event(act: KubernetesActuator, pool: str, reason: str, message: str, *, warning: bool = False) -> None:
    """Record a core/v1 Event on the pool's scaled object; a failure is logged, never raised."""
    if not act.params.events or act.params.dry_run:
        return
    addr = act._addr(pool)
    ns = act._ns(addr)
    g, v, _ = addr.gvr()
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{addr.name}.{int(now.timestamp() * 1e6):x}", "namespace": ns},
        "involvedObject": {
            "apiVersion": f"{g}/{v}",
            "kind": addr.kind,
            "name": addr.name,
            "namespace": ns,
            "uid": act.object_uid(pool),
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": "pdscale"},
        "reportingComponent": "pdscale",
        "reportingInstance": act.params.field_manager,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        act._invoke(
            pool,
            "create_event",
            lambda: act._core.create_namespaced_event(
                ns, body, _preload_content=False, _request_timeout=act.params.timeout_s
            ),
        )
    except ActuationError as exc:
        log.warning("kubernetes_event_failed", pool=pool, reason=reason, error=str(exc))


def drain_event(act: KubernetesActuator, pool: str, res: DrainResult) -> None:
    """The Event for a scale-down's drain (a Warning when it timed out)."""
    if not (res.drained or res.timed_out or res.cancelled):
        return
    reason = "DrainTimeout" if res.timed_out else "Drained"
    record_event(act, pool, reason, res.summary(), warning=bool(res.timed_out))


def watch_external_changes(act: KubernetesActuator, pool: str, timeout_s: float) -> list[ExternalChangeReport]:
    """Watch the pool's parent object for ``timeout_s``; report each replica change nobody here made."""
    from kubernetes import watch

    a = act._addr(pool)
    ns = act._ns(a)
    if a.kind == "Deployment" and not a.plural:
        fn: Callable[..., Any] = act._apps.list_namespaced_deployment
        args: tuple[Any, ...] = (ns,)
    elif a.kind == "StatefulSet" and not a.plural:
        fn, args = act._apps.list_namespaced_stateful_set, (ns,)
    else:
        g, v, plural = a.gvr()
        fn, args = act._custom.list_namespaced_custom_object, (g, v, ns, plural)
    reports: list[ExternalChangeReport] = []
    w = watch.Watch()  # type: ignore[no-untyped-call]
    for event in w.stream(  # type: ignore[no-untyped-call]
        fn, *args, field_selector=f"metadata.name={a.name}", timeout_seconds=int(timeout_s)
    ):
        obj = event.get("raw_object") or {}
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        if pool in act.external.applied and replicas != act.external.applied[pool]:
            owner = next(
                (
                    str(e.get("manager"))
                    for e in (obj.get("metadata") or {}).get("managedFields") or []
                    if "f:replicas" in json.dumps(e.get("fieldsV1") or {})
                ),
                "",
            )
            report = act.external.observe(pool, replicas, by=owner)
            if report is not None and report not in reports:
                reports.append(report)
    return reports
