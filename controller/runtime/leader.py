"""Leader election: of several pdscale daemons for one model, only the leader actuates.

Two ways to elect, chosen by ``leader_election.mode`` (``off`` keeps one daemon per state file):

- ``lease``: a coordination.k8s.io/v1 Lease, with client-go's leaderelection semantics. A candidate takes the
  Lease when it is free, or when its record has not changed for ``lease_duration_s`` as measured on the
  candidate's own clock from the moment it saw that record (never from ``renewTime``, so clock skew between
  hosts does not matter). The leader renews every ``retry_period_s``; a leader whose last successful renewal is
  ``renew_deadline_s`` old stops actuating, which is before any standby can see its Lease expire
  (``renew_deadline_s < lease_duration_s``): a partitioned leader steps down on its own. Writes carry the
  Lease's resourceVersion, so two candidates racing for a free Lease cannot both win (409 Conflict).
- ``file``: one host. The state file's lock (``<state>.lock``, see pdscale.controller.runtime.store) is the
  election: the leader holds it, a standby waits for it instead of refusing to start. The kernel frees it when
  the leader exits or is killed, so a standby takes over within ``retry_period_s``. There is no lease to expire:
  a leader that hangs without dying keeps the lock.

Leadership is a time-bounded fact (``Elector.is_leader`` compares the last renewal with the renew deadline on
the monotonic clock), so a stuck election loop cannot leave a stale leader actuating. ``FencedActuator``
checks it again immediately before every call that changes the cluster.
"""

# ruff: noqa: PLC0415 - the kubernetes client is imported lazily, so pdscale runs without it
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import structlog

from pdscale.controller.runtime.fence import FencedActuator
from pdscale.controller.runtime.settings import LeaderElectionMode, LeaderElectionSettings, SettingsError
from pdscale.controller.runtime.store import lock_path_of

__all__ = [
    "Elector",
    "FencedActuator",
    "FileLockElector",
    "KubernetesLeaseLock",
    "LeaderStatus",
    "LeaseConflictError",
    "LeaseElector",
    "LeaseError",
    "LeaseLock",
    "LeaseRecord",
    "Role",
    "build_elector",
    "default_identity",
    "run_election",
]

log = structlog.get_logger(__name__)

JITTER_FACTOR = 1.2
"""client-go's: a candidate waits retry_period x [1, 1.2) between attempts."""
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Role(StrEnum):
    """What this daemon is in the election."""

    SINGLE = "single"
    """Leader election is off: the only daemon on its state file."""
    LEADER = "leader"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class LeaderStatus:
    """Who leads, as this daemon knows it (the admin API's ``role``/``leader``/``identity``)."""

    role: Role
    identity: str
    leader: str = ""
    """The holder identity of the current leader; empty when none is known."""
    transitions: int = 0

    @property
    def actuates(self) -> bool:
        """Whether this daemon may change the cluster."""
        return self.role is not Role.STANDBY


def default_identity() -> str:
    """``$POD_NAME`` (else the host name) and the process id: unique per daemon, readable in ``kubectl get``."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "pdscale"
    return f"{base}_{os.getpid()}"


# -- the Lease record and where it lives --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The fields of a Lease's spec that election uses (times are Unix seconds)."""

    holder: str
    lease_duration_s: float
    acquire_time_s: float
    renew_time_s: float
    transitions: int
    resource_version: str = ""


class LeaseError(Exception):
    """The Lease could not be read or written (network, server error); the attempt failed."""


class LeaseConflictError(LeaseError):
    """Someone else wrote the Lease first (409 Conflict or AlreadyExists)."""


class LeaseLock(Protocol):
    """Where the Lease lives: read it, create it, replace it at the resourceVersion it was read at."""

    def get(self) -> LeaseRecord | None:
        """The current record, or None when there is no Lease."""
        ...

    def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create the Lease; LeaseConflictError when it exists."""
        ...

    def update(self, record: LeaseRecord) -> LeaseRecord:
        """Replace the Lease at ``record.resource_version``; LeaseConflictError when it moved on."""
        ...

    def describe(self) -> str:
        """Where the Lease is, for logs."""
        ...


def _micro_time(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> float:
    if not value:
        return 0.0
    text = str(value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def lease_body(name: str, namespace: str, record: LeaseRecord) -> dict[str, Any]:
    """A coordination.k8s.io/v1 Lease for ``record``."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.resource_version:
        meta["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": max(1, round(record.lease_duration_s)),
            "acquireTime": _micro_time(record.acquire_time_s),
            "renewTime": _micro_time(record.renew_time_s),
            "leaseTransitions": record.transitions,
        },
    }


def record_of(lease: Mapping[str, Any]) -> LeaseRecord:
    """The record in a Lease object."""
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_duration_s=float(spec.get("leaseDurationSeconds") or 0),
        acquire_time_s=_parse_time(spec.get("acquireTime")),
        renew_time_s=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
    )


class KubernetesLeaseLock:
    """A Lease on the Kubernetes API, through the official client (imported when built)."""

    def __init__(self, settings: LeaderElectionSettings, api_client: Any = None) -> None:
        self.name = settings.lease_name
        self.namespace = settings.namespace or _own_namespace()
        self.timeout_s = settings.retry_period_s
        self._api_client = api_client or _connect(settings)
        from kubernetes import client

        self._api: Any = client.CoordinationV1Api(self._api_client)

    def describe(self) -> str:
        """namespace/name."""
        return f"{self.namespace}/{self.name}"

    def close(self) -> None:
        """Release the HTTP pool."""
        self._api_client.close()

    def _call(self, fn: Callable[[], Any]) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            resp = fn()
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                raise LeaseConflictError(f"lease {self.describe()}: 409 {exc.reason}") from None
            raise LeaseError(f"lease {self.describe()}: {exc.status} {exc.reason}") from None
        except (HTTPError, OSError) as exc:
            raise LeaseError(f"lease {self.describe()}: {type(exc).__name__}: {exc}") from None
        return dict(json.loads(resp.data)) if resp.data else {}

    def _kw(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self.timeout_s}

    def get(self) -> LeaseRecord | None:
        """Read the Lease (None when absent)."""
        got = self._call(lambda: self._api.read_namespaced_lease(self.name, self.namespace, **self._kw()))
        return None if got is None else record_of(got)

    def create(self, record: LeaseRecord) -> LeaseRecord:
        """Create it (AlreadyExists is a conflict)."""
        body = lease_body(self.name, self.namespace, replace(record, resource_version=""))
        got = self._call(lambda: self._api.create_namespaced_lease(self.namespace, body, **self._kw()))
        if got is None:
            raise LeaseError(f"lease {self.describe()}: namespace not found")
        return record_of(got)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        """PUT it at the resourceVersion it was read at."""
        body = lease_body(self.name, self.namespace, record)
        got = self._call(lambda: self._api.replace_namespaced_lease(self.name, self.namespace, body, **self._kw()))
        if got is None:
            raise LeaseConflictError(f"lease {self.describe()}: deleted meanwhile")
        return record_of(got)


def _own_namespace() -> str:
    try:
        return _SA_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def _connect(s: LeaderElectionSettings) -> Any:
    from kubernetes import client, config

    in_cluster = s.in_cluster
    if in_cluster is None:
        in_cluster = s.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            return client.ApiClient(cfg)
        return config.new_client_from_config(config_file=s.kubeconfig, context=s.context)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise LeaseError(f"leader_election: cannot load Kubernetes credentials: {exc}") from None


# -- electors -----------------------------------------------------------------------------------------------
class Elector(Protocol):
    """One daemon's side of an election; ``try_acquire_or_renew`` is called every ``retry_period_s``."""

    identity: str
    retry_period_s: float

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this daemon holds the leadership afterwards."""
        ...

    def is_leader(self) -> bool:
        """Whether this daemon may actuate right now."""
        ...

    def status(self) -> LeaderStatus:
        """Role, identity and the leader this daemon knows of."""
        ...

    def release(self) -> None:
        """Give the leadership up now (a clean stop), so a standby need not wait for expiry."""
        ...


class LeaseElector:
    """client-go's LeaderElector over a ``LeaseLock``, one attempt per ``try_acquire_or_renew``."""

    def __init__(
        self,
        lock: LeaseLock,
        identity: str,
        *,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.lock = lock
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.clock = clock
        self.wall = wall
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0
        self.renewed_at: float | None = None
        """Monotonic time an attempt that renewed began (the Lease was written after it)."""

    def _observe(self, record: LeaseRecord, now: float) -> None:
        if self.observed is None or _content(record) != _content(self.observed):
            self.observed_at = now
        self.observed = record

    def try_acquire_or_renew(self) -> bool:
        """Create the Lease, renew ours, or take one whose record stood still for ``lease_duration_s``."""
        started = self.clock()
        wall = self.wall()
        try:
            current = self.lock.get()
            if current is None:
                mine = LeaseRecord(self.identity, self.lease_duration_s, wall, wall, 0)
                self._observe(self.lock.create(mine), self.clock())
                self.renewed_at = started
                return True
            self._observe(current, self.clock())
            if (
                current.holder
                and current.holder != self.identity
                and self.observed_at + self.lease_duration_s > self.clock()
            ):
                self.renewed_at = None  # someone else holds an unexpired lease (ours lapsed, if we had one)
                return False
            if current.holder == self.identity:
                mine = replace(current, lease_duration_s=self.lease_duration_s, renew_time_s=wall)
            else:
                mine = LeaseRecord(
                    self.identity, self.lease_duration_s, wall, wall, current.transitions + 1, current.resource_version
                )
            self._observe(self.lock.update(mine), self.clock())
        except LeaseError as exc:
            log.debug("leader_lease_attempt_failed", lease=self.lock.describe(), error=str(exc))
            return self.is_leader()
        self.renewed_at = started
        return True

    def is_leader(self) -> bool:
        """True until ``renew_deadline_s`` after the start of the last attempt that renewed."""
        return self.renewed_at is not None and self.clock() - self.renewed_at < self.renew_deadline_s

    def status(self) -> LeaderStatus:
        """Leader or standby, and the holder last seen (empty once an unrenewed lease has expired)."""
        leader = self.is_leader()
        seen = self.observed
        holder = ""
        if leader:
            holder = self.identity
        elif seen is not None and seen.holder and self.observed_at + self.lease_duration_s > self.clock():
            holder = seen.holder
        return LeaderStatus(
            role=Role.LEADER if leader else Role.STANDBY,
            identity=self.identity,
            leader=holder,
            transitions=seen.transitions if seen is not None else 0,
        )

    def release(self) -> None:
        """Stop leading and hand the Lease back (empty holder, as client-go's ReleaseOnCancel does)."""
        was_leader = self.is_leader()
        self.renewed_at = None
        if not was_leader or self.observed is None or self.observed.holder != self.identity:
            return
        wall = self.wall()
        freed = replace(self.observed, holder="", lease_duration_s=1.0, acquire_time_s=wall, renew_time_s=wall)
        try:
            self._observe(self.lock.update(freed), self.clock())
        except LeaseError as exc:
            log.warning("leader_release_failed", lease=self.lock.describe(), error=str(exc))
            return
        log.info("leader_released", lease=self.lock.describe(), identity=self.identity)


def _content(r: LeaseRecord) -> tuple[str, float, float, float, int]:
    return (r.holder, r.lease_duration_s, r.acquire_time_s, r.renew_time_s, r.transitions)


class FileLockElector:
    """One host: holding the state file's lock is leading; a standby polls it every ``retry_period_s``."""

    def __init__(self, state_path: Path, identity: str, *, retry_period_s: float = 2.0) -> None:
        self.lock_path = lock_path_of(Path(state_path))
        self.identity = identity
        self.retry_period_s = retry_period_s
        self._fh: Any = None
        self._seen_holder = ""

    def try_acquire_or_renew(self) -> bool:
        """Take the lock when it is free (never blocks); the holder's identity is written into the file."""
        import fcntl

        if self._fh is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.lock_path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            self._seen_holder = fh.read().strip()
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{self.identity}\n")
        fh.flush()
        self._fh = fh
        return True

    def is_leader(self) -> bool:
        """Whether this process holds the lock."""
        return self._fh is not None

    def status(self) -> LeaderStatus:
        """Leader, or standby naming the identity written in the lock file."""
        if self._fh is not None:
            return LeaderStatus(Role.LEADER, self.identity, self.identity)
        return LeaderStatus(Role.STANDBY, self.identity, self._seen_holder)

    def release(self) -> None:
        """Close the lock file (which frees the lock)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def build_elector(settings: LeaderElectionSettings, state_path: Path | None, *, api_client: Any = None) -> Elector:
    """The elector ``settings.mode`` names (not ``off``); SettingsError when it cannot be built."""
    identity = settings.identity or default_identity()
    if settings.mode is LeaderElectionMode.FILE:
        if state_path is None:
            raise ValueError("leader_election.mode 'file' locks the state file: set state.path")
        return FileLockElector(state_path, identity, retry_period_s=settings.retry_period_s)
    if settings.mode is LeaderElectionMode.LEASE:
        try:
            lock = KubernetesLeaseLock(settings, api_client)
        except ImportError:
            raise SettingsError(
                "leader_election.mode 'lease' needs the kubernetes client: pip install 'pdscale[kubernetes]'"
            ) from None
        except LeaseError as exc:
            raise SettingsError(str(exc)) from None
        return LeaseElector(
            lock,
            identity,
            lease_duration_s=settings.lease_duration_s,
            renew_deadline_s=settings.renew_deadline_s,
            retry_period_s=settings.retry_period_s,
        )
    raise ValueError(f"leader_election.mode {settings.mode.value!r} elects nothing")


async def run_election(
    elector: Elector,
    stop: asyncio.Event,
    on_change: Callable[[LeaderStatus], Any] | None = None,
) -> None:
    """Attempt every ``retry_period_s`` (candidates with client-go's jitter) until ``stop``; log each change."""
    was: Role | None = None
    while not stop.is_set():
        leader = await asyncio.to_thread(elector.try_acquire_or_renew)
        status = elector.status()
        if status.role is not was:
            if leader:
                log.info("leader_elected", identity=status.identity, transitions=status.transitions)
            elif was is Role.LEADER:
                log.warning("leader_lost", identity=status.identity, leader=status.leader or None)
            else:
                log.info("leader_standby", identity=status.identity, leader=status.leader or None)
            was = status.role
            if on_change is not None:
                on_change(status)
        wait_s = elector.retry_period_s * (1.0 if leader else random.uniform(1.0, JITTER_FACTOR))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait_s)
