"""An emulated Kubernetes API server speaking the real HTTP API, for the kubernetes actuator's tests.

It serves what pdscale's actuator calls, over plain HTTP on loopback, so the official client library is
exercised end to end (kubeconfig, URL building, content types, error decoding):

- ``/version``;
- workloads (Deployments, StatefulSets, LeaderWorkerSets and registered custom resources): GET/PUT/PATCH of the
  object and of its ``/scale`` subresource (autoscaling/v1 Scale), list with ``fieldSelector=metadata.name=``
  and ``?watch=true`` (JSON lines of ADDED/MODIFIED events);
- pods: list with ``labelSelector`` (equality terms), GET and PATCH (labels and annotations);
- Events (core/v1): POST and list in a namespace, kept in ``k8s_events``;
- every write bumps a global resourceVersion and records ``managedFields`` (manager from ``fieldManager`` or the
  User-Agent); a PUT with a stale ``metadata.resourceVersion`` gets 409 Conflict; PATCH accepts JSON patch,
  merge patch and strategic merge patch (the latter applied as a merge patch, enough for scale and annotations).

A tiny workload controller makes pods follow ``spec.replicas``: new pods are Pending then Running+Ready after
``start_delay_s``; scale-down marks pods terminating (``deletionTimestamp``) and removes them after
``terminate_delay_s``; not-ready pods go first, then for Deployments the lowest
``controller.kubernetes.io/pod-deletion-cost``, for StatefulSets and LeaderWorkerSets the highest ordinal.
``on_delete(pod_name)`` is called when a pod starts terminating (a test kills that replica's engine there).
Leases (coordination.k8s.io/v1, for leader election): GET, POST on the collection (409 AlreadyExists), PUT with
``metadata.resourceVersion`` (409 Conflict when stale). A base URL ``.../clients/<name>`` names the client (put it
in its kubeconfig): ``partition(name)`` then drops that client's requests (all, or only its Lease calls), and every
scale write is logged in ``scale_writes`` with the client and the Lease holders at that moment, so a test counts
writes made by a daemon that was not the leader. These client names are an emulator-only device.

It is not a real API server: no admission, no RBAC, no server-side apply, no informers' bookmarks.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["K8sEmulator", "ResourceKind", "ScaleWrite", "running_emulator", "write_kubeconfig"]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """A workload kind the emulator serves."""

    group: str
    version: str
    plural: str
    kind: str


BUILTIN_KINDS = (
    ResourceKind("apps", "v1", "deployments", "Deployment"),
    ResourceKind("apps", "v1", "statefulsets", "StatefulSet"),
    ResourceKind("leaderworkerset.x-k8s.io", "v1", "leaderworkersets", "LeaderWorkerSet"),
)


class ApiError(Exception):
    """Answered as a Kubernetes Status object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(frozen=True, slots=True)
class ScaleWrite:
    """One change of a workload's spec.replicas through /scale, as the emulator saw it."""

    time_s: float
    """Wall clock (time.time) when the write was applied."""
    client: str
    """The ``/clients/<name>`` the request came through ("" when none)."""
    manager: str
    plural: str
    name: str
    replicas: int
    lease_holders: dict[str, str]
    """``namespace/name`` of every Lease to its holderIdentity at the moment of the write."""


@dataclass
class _Fault:
    method: str
    path_suffix: str
    code: int
    times: int


@dataclass
class K8sEmulator:
    """State of the emulated cluster; thread-safe; ``clock`` drives pod lifecycles."""

    start_delay_s: float = 0.0
    terminate_delay_s: float = 0.0
    clock: Callable[[], float] = time.monotonic
    token: str | None = None
    kinds: dict[str, ResourceKind] = field(default_factory=lambda: {k.plural: k for k in BUILTIN_KINDS})
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    scale_writes: list[ScaleWrite] = field(default_factory=list)
    k8s_events: list[dict[str, Any]] = field(default_factory=list)
    """core/v1 Events created by clients, in order."""
    on_delete: Callable[[str], None] | None = None
    lease_writes: list[tuple[float, str, str, int]] = field(default_factory=list)
    """(time.time, client, holderIdentity, leaseTransitions) of every Lease create or replace."""
    partitioned: dict[str, str] = field(default_factory=dict)
    """client name -> "all" or "leases": requests the emulator drops without an answer."""
    _client: str = ""
    _rv: int = 100
    _seq: int = 0
    _cond: threading.Condition = field(default_factory=lambda: threading.Condition(threading.RLock()))

    # -- setup ---------------------------------------------------------------------------------
    def add_kind(self, group: str, version: str, plural: str, kind: str) -> None:
        """Serve a custom resource kind with a /scale subresource."""
        self.kinds[plural] = ResourceKind(group, version, plural, kind)

    def create(self, plural: str, name: str, replicas: int, namespace: str = "default") -> dict[str, Any]:
        """Create a workload with ``replicas`` pods already running and ready."""
        kind = self.kinds[plural]
        with self._cond:
            obj: dict[str, Any] = {
                "apiVersion": f"{kind.group}/{kind.version}",
                "kind": kind.kind,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": f"uid-{plural}-{name}",
                    "generation": 1,
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                    "labels": {"app": name},
                    "managedFields": [],
                },
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai:latest"}]},
                    },
                },
                "status": {"replicas": 0, "readyReplicas": 0},
            }
            self.objects[(plural, namespace, name)] = obj
            self._record(obj, "kubectl-create", "Update", None)
            self._bump(plural, obj, "ADDED")
            self._reconcile(plural, namespace, name, instant=True)
            return copy.deepcopy(obj)

    def fail_next(self, method: str, path_suffix: str, code: int, times: int = 1) -> None:
        """Answer the next ``times`` ``method`` requests whose path ends with ``path_suffix`` with ``code``."""
        with self._cond:
            self.faults.append(_Fault(method.upper(), path_suffix, code, times))

    def set_replicas(
        self, plural: str, name: str, replicas: int, manager: str = "kubectl", ns: str = "default"
    ) -> None:
        """Change ``spec.replicas`` as another client would (an external change)."""
        with self._cond:
            obj = self._get(plural, ns, name)
            obj["spec"]["replicas"] = replicas
            self._record(obj, manager, "Update", "scale")
            self._bump(plural, obj, "MODIFIED")

    def resource_version(self, plural: str, name: str, ns: str = "default") -> str:
        """The object's current resourceVersion."""
        with self._cond:
            return str(self._get(plural, ns, name)["metadata"]["resourceVersion"])

    def pods_of(self, name: str, ns: str = "default") -> list[dict[str, Any]]:
        """The workload's pods after a reconcile (copies)."""
        with self._cond:
            for plural, n, obj_name in list(self.objects):
                if n == ns and obj_name == name:
                    self._reconcile(plural, ns, name)
            return [copy.deepcopy(p) for p in self.pods.values() if p["metadata"]["labels"].get("app") == name]

    # -- internals ----------------------------------------------------------------------------
    def _get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        if plural not in self.kinds:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
        try:
            return self.objects[(plural, ns, name)]
        except KeyError:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found') from None

    def _bump(self, plural: str, obj: dict[str, Any], event: str) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self.events.append((self._rv, plural, event, copy.deepcopy(obj)))
        self._cond.notify_all()

    @staticmethod
    def _record(obj: dict[str, Any], manager: str, operation: str, subresource: str | None) -> None:
        fields = obj["metadata"].setdefault("managedFields", [])
        fields[:] = [f for f in fields if "f:replicas" not in json.dumps(f.get("fieldsV1", {}))]
        entry: dict[str, Any] = {
            "manager": manager,
            "operation": operation,
            "apiVersion": obj["apiVersion"],
            "time": "2025-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
        if subresource:
            entry["subresource"] = subresource
        fields.append(entry)

    def _reconcile(self, plural: str, ns: str, name: str, *, instant: bool = False) -> None:
        obj = self.objects.get((plural, ns, name))
        if obj is None:
            return
        now = self.clock()
        mine = [p for p in self.pods.values() if p["metadata"]["labels"].get("app") == name]
        for p in mine:
            meta = p["metadata"]
            if meta.get("deletionTimestamp") and now - p["_deleted_at"] >= self.terminate_delay_s:
                del self.pods[(ns, meta["name"])]
            elif p["status"]["phase"] == "Pending" and now - p["_created_at"] >= self.start_delay_s:
                p["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                self._rv += 1
                meta["resourceVersion"] = str(self._rv)
        live = [p for p in self.pods.values() if p["metadata"]["labels"].get("app") == name]
        active = [p for p in live if not p["metadata"].get("deletionTimestamp")]
        want = int(obj["spec"].get("replicas") or 0)
        for _ in range(want - len(active)):
            self._seq += 1
            pod_name = f"{name}-{self._seq:04d}"
            ready = instant or self.start_delay_s <= 0
            self.pods[(ns, pod_name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": ns,
                    "labels": {"app": name},
                    "annotations": {},
                    "resourceVersion": str(self._rv),
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                },
                "spec": {},
                "status": (
                    {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
                    if ready
                    else {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
                ),
                "_created_at": now,
            }
        if len(active) > want:

            def victim_order(p: dict[str, Any]) -> tuple[int, int, str]:
                running = p["status"]["phase"] == "Running"
                cost = int(p["metadata"].get("annotations", {}).get(DELETION_COST, "0"))
                return (int(running), cost, p["metadata"]["name"])

            order = sorted(active, key=victim_order)
            if plural in ("statefulsets", "leaderworkersets"):  # highest ordinal first, costs ignored
                order = sorted(active, key=lambda p: p["metadata"]["name"], reverse=True)
            for p in order[: len(active) - want]:
                p["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
                p["_deleted_at"] = now
                if self.on_delete is not None:
                    self.on_delete(p["metadata"]["name"])
                if self.terminate_delay_s <= 0 or instant:
                    del self.pods[(ns, p["metadata"]["name"])]
        live = [p for p in self.pods.values() if p["metadata"]["labels"].get("app") == name]
        ready = sum(1 for p in live if p["status"]["phase"] == "Running" and not p["metadata"].get("deletionTimestamp"))
        status = {"replicas": len(live), "readyReplicas": ready}
        if plural == "leaderworkersets":
            status["hpaPodSelector"] = f"app={name}"
        if {k: obj["status"].get(k) for k in status} != status:
            obj["status"].update(status)
            self._bump(plural, obj, "MODIFIED")

    def _scale_of(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 0)},
            "status": {"replicas": obj["status"].get("replicas", 0), "selector": f"app={meta['name']}"},
        }

    # -- request handling -----------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], body: Any, ctype: str, agent: str, client: str = ""
    ) -> Any:
        """Answer one request (the HTTP layer turns ApiError into a Status)."""
        with self._cond:
            self._client = client
            self.requests.append((method, path))
            for f in self.faults:
                if f.method == method and path.endswith(f.path_suffix) and f.times > 0:
                    f.times -= 1
                    raise ApiError(f.code, HTTPStatus(f.code).phrase.replace(" ", ""), f"injected {f.code}")
            if path == "/version":
                return {"major": "1", "minor": "30", "gitVersion": "v1.30.0-pdscale-emulator", "platform": "linux"}
            parts = path.strip("/").split("/")
            manager = query.get("fieldManager") or agent.split("/", maxsplit=1)[0] or "unknown"
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "events":
                return self._events(method, parts[3], body)
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "pods":
                return self._pods(method, parts[3], parts[5] if len(parts) > 5 else None, query, body, ctype)
            if parts[:3] == ["apis", "coordination.k8s.io", "v1"] and len(parts) >= 6 and parts[5] == "leases":
                return self._lease(method, parts[4], parts[6] if len(parts) > 6 else None, body)
            if parts[0] == "apis" and len(parts) >= 6 and parts[3] == "namespaces":
                ns, plural = parts[4], parts[5]
                name = parts[6] if len(parts) > 6 else None
                sub = parts[7] if len(parts) > 7 else None
                if plural not in self.kinds:
                    raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
                if name is None:
                    return self._list(plural, ns, query)
                return self._object(method, plural, ns, name, sub, body, ctype, manager)
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _list(self, plural: str, ns: str, query: dict[str, str]) -> dict[str, Any]:
        name = _field_name(query.get("fieldSelector", ""))
        for pl, n, obj_name in list(self.objects):
            if pl == plural and n == ns:
                self._reconcile(pl, ns, obj_name)
        items = [
            copy.deepcopy(o)
            for (pl, n, obj_name), o in self.objects.items()
            if pl == plural and n == ns and name in (None, obj_name)
        ]
        kind = self.kinds[plural]
        return {
            "apiVersion": f"{kind.group}/{kind.version}",
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def watch(self, plural: str, ns: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Events for ``plural`` after ``resourceVersion`` (all current objects as ADDED when absent)."""
        name = _field_name(query.get("fieldSelector", ""))
        deadline = time.monotonic() + float(query.get("timeoutSeconds", "5"))
        with self._cond:
            if "resourceVersion" in query and query["resourceVersion"] not in ("", "0"):
                since = int(query["resourceVersion"])
            else:
                since = self._rv
                for (pl, n, obj_name), obj in self.objects.items():
                    if pl == plural and n == ns and name in (None, obj_name):
                        yield {"type": "ADDED", "object": copy.deepcopy(obj)}
        while time.monotonic() < deadline:
            with self._cond:
                fresh = [e for e in self.events if e[0] > since and e[1] == plural]
                if not fresh:
                    self._cond.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
                    continue
                since = fresh[-1][0]
            for _, _, kind, obj in fresh:
                meta = obj["metadata"]
                if meta["namespace"] == ns and name in (None, meta["name"]):
                    yield {"type": kind, "object": obj}

    def _object(
        self,
        method: str,
        plural: str,
        ns: str,
        name: str,
        sub: str | None,
        body: Any,
        ctype: str,
        manager: str,
    ) -> dict[str, Any]:
        obj = self._get(plural, ns, name)
        self._reconcile(plural, ns, name)
        if sub not in (None, "scale"):
            raise ApiError(404, "NotFound", f"subresource {sub} not served")
        current = self._scale_of(plural, obj) if sub == "scale" else copy.deepcopy(obj)
        if method == "GET":
            return current
        if method == "PUT":
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != obj["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            new = body
        elif method == "PATCH":
            new = _apply_patch(current, body, ctype)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{method} not allowed")
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f"{plural} {name}: spec.replicas: Invalid value: {replicas!r}")
        changed = replicas != obj["spec"].get("replicas")
        if sub is None:
            annotations = (new.get("metadata") or {}).get("annotations")
            if annotations != obj["metadata"].get("annotations"):
                obj["metadata"]["annotations"] = annotations
                changed = True
        if changed:
            obj["spec"]["replicas"] = replicas
            obj["metadata"]["generation"] += 1
            self._record(obj, manager, "Update", sub)
            self._bump(plural, obj, "MODIFIED")
            self._reconcile(plural, ns, name)
            if sub == "scale":
                self._log_scale_write(manager, plural, name, replicas)
        return self._scale_of(plural, obj) if sub == "scale" else copy.deepcopy(obj)

    def _pods(
        self, method: str, ns: str, name: str | None, query: dict[str, str], body: Any, ctype: str
    ) -> dict[str, Any]:
        for plural, n, obj_name in list(self.objects):
            if n == ns:
                self._reconcile(plural, ns, obj_name)
        if name is None:
            wanted = _label_terms(query.get("labelSelector", ""))
            items = [
                _public(p)
                for (n, _), p in sorted(self.pods.items())
                if n == ns and all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())
            ]
            return {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        pod = self.pods.get((ns, name))
        if pod is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        if method == "PATCH":
            patched = _apply_patch(_public(pod), body, ctype)
            pod["metadata"]["annotations"] = patched["metadata"].get("annotations") or {}
            pod["metadata"]["labels"] = patched["metadata"].get("labels") or {}
            self._rv += 1
            pod["metadata"]["resourceVersion"] = str(self._rv)
        return _public(pod)

    def _events(self, method: str, ns: str, body: Any) -> dict[str, Any]:
        if method == "GET":
            items = [copy.deepcopy(e) for e in self.k8s_events if e["metadata"].get("namespace") == ns]
            return {
                "apiVersion": "v1",
                "kind": "EventList",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        if method != "POST" or not isinstance(body, dict):
            raise ApiError(405, "MethodNotAllowed", f"{method} on events is not served")
        for key in ("reason", "involvedObject"):
            if not body.get(key):
                raise ApiError(422, "Invalid", f"Event.v1: {key}: Required value")
        self._rv += 1
        event = copy.deepcopy(body)
        event.setdefault("metadata", {}).update(namespace=ns, resourceVersion=str(self._rv))
        self.k8s_events.append(event)
        return copy.deepcopy(event)

    # -- leases (coordination.k8s.io/v1), partitions and the scale-write log ---------------------------------
    def partition(self, client: str, scope: str = "all") -> None:
        """Drop every request of ``client`` (``scope="leases"``: only its Lease calls) until ``heal``."""
        if scope not in ("all", "leases"):
            raise ValueError(f"partition scope must be 'all' or 'leases', got {scope!r}")
        with self._cond:
            self.partitioned[client] = scope

    def heal(self, client: str) -> None:
        """Answer ``client`` again."""
        with self._cond:
            self.partitioned.pop(client, None)

    def drops(self, client: str, path: str) -> bool:
        """Whether a request of ``client`` for ``path`` is lost in a partition."""
        with self._cond:
            scope = self.partitioned.get(client)
        return scope == "all" or (scope == "leases" and "/leases" in path)

    def lease(self, name: str, ns: str = "default") -> dict[str, Any] | None:
        """A copy of the Lease, or None."""
        with self._cond:
            got = self.leases.get((ns, name))
            return copy.deepcopy(got) if got is not None else None

    def writes_by_non_leader(self, lease: str = "pdscale", ns: str = "default") -> list[ScaleWrite]:
        """Scale writes made by a client that was not the Lease's holder at that moment (double actuation)."""
        key = f"{ns}/{lease}"
        with self._cond:
            return [w for w in self.scale_writes if w.client != w.lease_holders.get(key)]

    def _log_scale_write(self, manager: str, plural: str, name: str, replicas: int) -> None:
        holders = {
            f"{n}/{k}": str((o.get("spec") or {}).get("holderIdentity") or "") for (n, k), o in self.leases.items()
        }
        self.scale_writes.append(ScaleWrite(time.time(), self._client, manager, plural, name, replicas, holders))

    def _lease(self, method: str, ns: str, name: str | None, body: Any) -> dict[str, Any]:
        if name is None:
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", f"{method} on the leases collection is not served")
            if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
                raise ApiError(422, "Invalid", "Lease.coordination.k8s.io: metadata.name: Required value")
            name = str(body["metadata"]["name"])
            if (ns, name) in self.leases:
                raise ApiError(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
            return self._store_lease(ns, name, body)
        current = self.leases.get((ns, name))
        if current is None:
            raise ApiError(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        if method == "GET":
            return copy.deepcopy(current)
        if method != "PUT":
            raise ApiError(405, "MethodNotAllowed", f"{method} on a Lease is not served")
        sent_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )
        return self._store_lease(ns, name, body)

    def _store_lease(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": str(self._rv), "uid": f"uid-lease-{name}"},
            "spec": copy.deepcopy(body.get("spec") or {}),
        }
        self.leases[(ns, name)] = obj
        spec = obj["spec"]
        holder, transitions = str(spec.get("holderIdentity") or ""), int(spec.get("leaseTransitions") or 0)
        self.lease_writes.append((time.time(), self._client, holder, transitions))
        return copy.deepcopy(obj)


def _split_client(path: str) -> tuple[str, str]:
    """``/clients/<name>/rest`` -> (name, ``/rest``); other paths have no client name."""
    if path.startswith("/clients/"):
        _, _, rest = path.partition("/clients/")
        name, _, tail = rest.partition("/")
        return name, "/" + tail
    return "", path


def _public(pod: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in pod.items() if not k.startswith("_")}


def _field_name(selector: str) -> str | None:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name":
            return value.lstrip("=")
    return None


def _label_terms(selector: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for term in filter(None, selector.split(",")):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!"):
            raise ApiError(400, "BadRequest", f"unsupported label selector term {term!r} (equality only)")
        out[key.strip()] = value.lstrip("=").strip()
    return out


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def _apply_patch(current: dict[str, Any], body: Any, ctype: str) -> dict[str, Any]:
    ctype = ctype.split(";", maxsplit=1)[0].strip()
    if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", f"{ctype} body must be a JSON object")
        return dict(_merge(current, body))
    if ctype == "application/json-patch+json":
        if not isinstance(body, list):
            raise ApiError(400, "BadRequest", "json patch body must be a list of operations")
        doc = copy.deepcopy(current)
        for op in body:
            *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
            node = doc
            for p in parents:
                node = node.setdefault(p, {})
            if op["op"] in ("add", "replace"):
                node[last] = op["value"]
            elif op["op"] == "remove":
                node.pop(last, None)
            elif op["op"] == "test" and node.get(last) != op["value"]:
                raise ApiError(422, "Invalid", f"json patch test failed at {op['path']}")
        return doc
    raise ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json ({ctype})",
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        emu = self.server.emulator
        url = urlsplit(self.path)
        client, path = _split_client(url.path)
        if emu.drops(client, path):
            self.close_connection = True  # a partition: no answer at all
            return
        url = url._replace(path=path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            if emu.token is not None and self.headers.get("Authorization") != f"Bearer {emu.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            body = json.loads(raw) if raw else None
            if self.command == "GET" and query.get("watch") in ("true", "1"):
                parts = url.path.strip("/").split("/")
                self._stream(emu.watch(parts[5], parts[4], query))
                return
            result = emu.handle(
                self.command,
                url.path,
                query,
                body,
                self.headers.get("Content-Type", ""),
                self.headers.get("User-Agent", ""),
                client,
            )
        except ApiError as exc:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
            self._reply(exc.code, {**status, "message": exc.message, "reason": exc.reason, "code": exc.code})
            return
        self._reply(200, result)

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve  # noqa: N815 - http.server dispatches by these names


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: K8sEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the leader-election tests kill -9 daemons) is not an emulator error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@contextmanager
def running_emulator(emulator: K8sEmulator | None = None) -> Iterator[tuple[K8sEmulator, str]]:
    """Serve ``emulator`` on a free loopback port; yields it and its base URL."""
    emu = emulator or K8sEmulator()
    server = _Server(("127.0.0.1", 0), _Handler)
    server.emulator = emu
    thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), name="k8s-emulator", daemon=True)
    thread.start()
    try:
        yield emu, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_kubeconfig(path: Path, server: str, token: str | None = None, namespace: str = "default") -> Path:
    """A kubeconfig whose only context points at ``server``."""
    user: dict[str, Any] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "pdscale", "user": user}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "pdscale", "namespace": namespace}}
        ],
        "current-context": "emulator",
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path
