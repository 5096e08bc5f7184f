"""Leader election: client-go Lease semantics on a manual clock, the Lease on the emulated API server, the
one-host file lock, the actuation fence and the settings that bound it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pdscale.controller.core.protocols import ActuationError, can_flip_roles
from pdscale.controller.core.types import ReplicaInfo, RoleFlip
from pdscale.controller.runtime.leader import (
    FencedActuator,
    FileLockElector,
    KubernetesLeaseLock,
    LeaseConflictError,
    LeaseElector,
    LeaseError,
    LeaseRecord,
    Role,
    build_elector,
)
from pdscale.controller.runtime.settings import LeaderElectionSettings, SettingsError, parse_settings
from pdscale.controller.runtime.store import SqliteStore, StoreError
from pdscale.testing import FakeActuator, ManualClock
from tests.helpers.k8s_emulator import running_emulator, write_kubeconfig

LEASE_S, RENEW_S, RETRY_S = 15.0, 10.0, 2.0


class MemoryLease:
    """A LeaseLock in memory with resourceVersion checks, and a switch that makes every call fail."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.rv = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise LeaseError("unreachable")

    def get(self) -> LeaseRecord | None:
        self._check()
        return self.record

    def create(self, record: LeaseRecord) -> LeaseRecord:
        self._check()
        if self.record is not None:
            raise LeaseConflictError("exists")
        return self._put(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        self._check()
        if self.record is None or record.resource_version != self.record.resource_version:
            raise LeaseConflictError("stale")
        return self._put(record)

    def _put(self, record: LeaseRecord) -> LeaseRecord:
        self.rv += 1
        self.record = replace(record, resource_version=str(self.rv))
        return self.record

    def describe(self) -> str:
        return "memory"


class Partitionable:
    """One daemon's view of a MemoryLease, which a partition can cut off alone."""

    def __init__(self, lock: MemoryLease) -> None:
        self.lock = lock
        self.down = False

    def get(self) -> LeaseRecord | None:
        if self.down:
            raise LeaseError("unreachable")
        return self.lock.get()

    def create(self, record: LeaseRecord) -> LeaseRecord:
        if self.down:
            raise LeaseError("unreachable")
        return self.lock.create(record)

    def update(self, record: LeaseRecord) -> LeaseRecord:
        if self.down:
            raise LeaseError("unreachable")
        return self.lock.update(record)

    def describe(self) -> str:
        return "partitionable"


def _elector(lock: MemoryLease | Partitionable, identity: str, clock: ManualClock) -> LeaseElector:
    return LeaseElector(
        lock,
        identity,
        lease_duration_s=LEASE_S,
        renew_deadline_s=RENEW_S,
        retry_period_s=RETRY_S,
        clock=clock,
        wall=lambda: 1_000_000.0 + clock.now,
    )


class TestLeaseElector:
    def test_first_candidate_creates_the_lease(self) -> None:
        """With no Lease, the first candidate creates one naming itself, with no transition yet."""
        lock, clock = MemoryLease(), ManualClock()
        a = _elector(lock, "a", clock)
        assert a.try_acquire_or_renew()
        assert lock.record is not None
        assert (lock.record.holder, lock.record.transitions, lock.record.lease_duration_s) == ("a", 0, 15.0)

    def test_standby_names_the_holder(self) -> None:
        """A second candidate does not take a renewed Lease and reports its holder as the leader."""
        lock, clock = MemoryLease(), ManualClock()
        a, b = _elector(lock, "a", clock), _elector(lock, "b", clock)
        a.try_acquire_or_renew()
        for _ in range(20):  # 40 s of renewals, far beyond one lease duration
            clock.advance(RETRY_S)
            assert a.try_acquire_or_renew()
            assert not b.try_acquire_or_renew()
        assert (b.status().role, b.status().leader) == (Role.STANDBY, "a")

    def test_no_takeover_before_lease_duration(self) -> None:
        """A standby does not take a Lease whose record stood still for less than lease_duration_s."""
        lock, clock = MemoryLease(), ManualClock()
        a, b = _elector(lock, "a", clock), _elector(lock, "b", clock)
        a.try_acquire_or_renew()
        b.try_acquire_or_renew()  # b sees the record at t=0
        clock.advance(LEASE_S - 0.5)
        assert not b.try_acquire_or_renew()

    def test_takeover_after_lease_duration(self) -> None:
        """Once the record stood still for lease_duration_s, the standby takes it: new holder, one transition."""
        lock, clock = MemoryLease(), ManualClock()
        a, b = _elector(lock, "a", clock), _elector(lock, "b", clock)
        a.try_acquire_or_renew()
        b.try_acquire_or_renew()
        clock.advance(LEASE_S + 0.5)
        assert b.try_acquire_or_renew()
        assert lock.record is not None
        assert (lock.record.holder, lock.record.transitions) == ("b", 1)
        assert lock.record.acquire_time_s == 1_000_000.0 + LEASE_S + 0.5

    def test_renewal_keeps_acquire_time(self) -> None:
        """Renewing moves renewTime only: acquireTime and leaseTransitions stay."""
        lock, clock = MemoryLease(), ManualClock()
        a = _elector(lock, "a", clock)
        a.try_acquire_or_renew()
        clock.advance(RETRY_S)
        a.try_acquire_or_renew()
        assert lock.record is not None
        assert (lock.record.acquire_time_s, lock.record.renew_time_s) == (1_000_000.0, 1_000_000.0 + RETRY_S)

    def test_unrenewed_leader_steps_down_before_expiry(self) -> None:
        """A leader cut off from the Lease stops leading at renew_deadline_s and the standby starts at
        lease_duration_s: there is no moment when both lead."""
        lock, clock = MemoryLease(), ManualClock()
        cut_off = Partitionable(lock)
        a, b = _elector(cut_off, "a", clock), _elector(lock, "b", clock)
        a.try_acquire_or_renew()
        b.try_acquire_or_renew()
        cut_off.down = True
        both, a_stopped, b_started = [], None, None
        for _ in range(60):  # 30 s in 0.5 s steps, both attempting every step
            clock.advance(0.5)
            a.try_acquire_or_renew()
            b.try_acquire_or_renew()
            if a.is_leader() and b.is_leader():
                both.append(clock.now)
            if a_stopped is None and not a.is_leader():
                a_stopped = clock.now
            if b_started is None and b.is_leader():
                b_started = clock.now
        assert (a_stopped, b_started, both) == (RENEW_S, LEASE_S, [])

    def test_stale_resource_version_loses_the_race(self) -> None:
        """Two standbys taking an expired Lease from the same read: the second write conflicts and loses."""
        lock, clock = MemoryLease(), ManualClock()
        a = _elector(lock, "a", clock)
        a.try_acquire_or_renew()
        seen = lock.record
        assert seen is not None
        lock.update(replace(seen, holder="b", transitions=1))
        with pytest.raises(LeaseConflictError):
            lock.update(replace(seen, holder="c", transitions=1))

    def test_release_lets_a_standby_in_at_once(self) -> None:
        """A leader that stops cleanly empties holderIdentity; a standby takes the Lease on its next attempt."""
        lock, clock = MemoryLease(), ManualClock()
        a, b = _elector(lock, "a", clock), _elector(lock, "b", clock)
        a.try_acquire_or_renew()
        b.try_acquire_or_renew()
        a.release()
        clock.advance(RETRY_S)
        assert b.try_acquire_or_renew()
        assert not a.is_leader()


@pytest.mark.integration_k8s
class TestKubernetesLease:
    def _lock(self, tmp_path: Path, url: str, name: str) -> KubernetesLeaseLock:
        kc = write_kubeconfig(tmp_path / f"kc-{name}.json", f"{url}/clients/{name}")
        return KubernetesLeaseLock(LeaderElectionSettings(mode="lease", kubeconfig=str(kc)))

    def test_lease_fields_written(self, tmp_path: Path) -> None:
        """The Lease on the API server carries holderIdentity, leaseDurationSeconds, times and transitions."""
        with running_emulator() as (emu, url):
            elector = LeaseElector(self._lock(tmp_path, url, "a"), "a")
            assert elector.try_acquire_or_renew()
            spec = (emu.lease("pdscale") or {})["spec"]
        assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == ("a", 15, 0)
        assert spec["acquireTime"] == spec["renewTime"]

    def test_stale_update_conflicts(self, tmp_path: Path) -> None:
        """A PUT at an old resourceVersion gets 409 Conflict from the API server."""
        with running_emulator() as (_emu, url):
            lock = self._lock(tmp_path, url, "a")
            first = lock.create(LeaseRecord("a", 15.0, 1.0, 1.0, 0))
            lock.update(replace(first, renew_time_s=2.0))
            with pytest.raises(LeaseConflictError):
                lock.update(replace(first, holder="b"))

    def test_create_when_present_conflicts(self, tmp_path: Path) -> None:
        """Creating a Lease that exists is a conflict (AlreadyExists), not a takeover."""
        with running_emulator() as (_emu, url):
            lock = self._lock(tmp_path, url, "a")
            lock.create(LeaseRecord("a", 15.0, 1.0, 1.0, 0))
            with pytest.raises(LeaseConflictError):
                lock.create(LeaseRecord("b", 15.0, 1.0, 1.0, 0))

    def test_partitioned_renewal_fails(self, tmp_path: Path) -> None:
        """A leader cut off from the API server fails its renewal instead of believing it renewed."""
        with running_emulator() as (emu, url):
            elector = LeaseElector(self._lock(tmp_path, url, "a"), "a")
            elector.try_acquire_or_renew()
            renewed = elector.renewed_at
            emu.partition("a")
            elector.try_acquire_or_renew()
        assert elector.renewed_at == renewed


class TestFileLockElector:
    def test_standby_waits_then_takes_over(self, tmp_path: Path) -> None:
        """The second daemon on a state file waits (no error), names the holder, and leads once it is freed."""
        state = tmp_path / "state.db"
        a = FileLockElector(state, "a", retry_period_s=0.1)
        b = FileLockElector(state, "b", retry_period_s=0.1)
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
        assert (b.status().role, b.status().leader) == (Role.STANDBY, "a")
        a.release()
        assert b.try_acquire_or_renew()
        b.release()

    def test_is_the_state_file_lock(self, tmp_path: Path) -> None:
        """The file elector's lock is the state file's own: a daemon without election cannot open it meanwhile."""
        state = tmp_path / "state.db"
        a = FileLockElector(state, "a")
        a.try_acquire_or_renew()
        try:
            with pytest.raises(StoreError, match="in use by another pdscale daemon"):
                SqliteStore(state, exclusive=True)
        finally:
            a.release()


class TestFence:
    def test_write_refused_when_not_leading(self) -> None:
        """set_target raises, naming the leader, and leaves the backend untouched when leadership lapsed."""
        inner = FakeActuator({"prefill": 2})
        fenced = FencedActuator(inner, lambda: False, lambda: "pod-a_7")
        with pytest.raises(ActuationError, match="not the leader \\(leader: pod-a_7\\)"):
            fenced.set_target("prefill", 5)
        assert inner.target_size("prefill") == 2

    def test_write_passes_when_leading(self) -> None:
        """set_target reaches the backend while leading."""
        inner = FakeActuator({"prefill": 2})
        FencedActuator(inner, lambda: True, lambda: "me").set_target("prefill", 5)
        assert inner.target_size("prefill") == 5

    def test_role_flip_refused_when_not_leading(self) -> None:
        """An optional write (flip_roles) goes through the same check as set_target."""
        inner = FakeActuator({"prefill": 2, "decode": 2})
        fenced = FencedActuator(inner, lambda: False, lambda: "")
        with pytest.raises(ActuationError, match="none known"):
            fenced.flip_roles(RoleFlip("prefill", "decode", 1))
        assert inner.calls == []

    def test_adds_no_capability(self) -> None:
        """Fencing an actuator without role flips does not make it look able to flip roles."""

        class OnlyScale:
            def target_size(self, pool: str) -> int:
                return 1

            def set_target(self, pool: str, replicas: int) -> None:
                return None

            def replicas(self, pool: str) -> list[ReplicaInfo]:
                return []

        assert not can_flip_roles(FencedActuator(OnlyScale(), lambda: True, lambda: ""))


class TestSettings:
    POOLS = [{"name": "p", "role": "prefill", "gpus_per_replica": 1, "max_replicas": 2}]  # noqa: RUF012

    def test_renew_deadline_must_undercut_lease(self) -> None:
        """renew_deadline_s >= lease_duration_s is refused: a leader must stop before its lease can expire."""
        le = {"mode": "lease", "lease_duration_s": 5, "renew_deadline_s": 5}
        with pytest.raises(SettingsError, match=r"renew_deadline_s .* must be below lease_duration_s"):
            parse_settings({"pools": self.POOLS, "leader_election": le})

    def test_file_mode_needs_state_path(self) -> None:
        """The file lock mode without state.path is refused, naming what to set."""
        with pytest.raises(SettingsError, match=r"set state\.path"):
            parse_settings({"pools": self.POOLS, "leader_election": {"mode": "file"}})

    def test_client_go_defaults(self) -> None:
        """Defaults are client-go's: 15 s lease, 10 s renew deadline, 2 s retry period; election off."""
        le = parse_settings({"pools": self.POOLS}).leader_election
        assert (le.mode.value, le.lease_duration_s, le.renew_deadline_s, le.retry_period_s) == ("off", 15, 10, 2)


class TestBuild:
    def test_unreadable_kubeconfig_is_a_settings_error(self, tmp_path: Path) -> None:
        """Lease mode with a kubeconfig that does not exist fails with a SettingsError naming leader_election."""
        le = LeaderElectionSettings(mode="lease", kubeconfig=str(tmp_path / "missing.yaml"))
        with pytest.raises(SettingsError, match="leader_election: cannot load Kubernetes credentials"):
            build_elector(le, None)

    def test_file_mode_builds_the_state_file_lock(self, tmp_path: Path) -> None:
        """File mode elects over ``<state.path>.lock``."""
        elector = build_elector(LeaderElectionSettings(mode="file", identity="me"), tmp_path / "state.db")
        assert isinstance(elector, FileLockElector)
        assert elector.lock_path == tmp_path / "state.db.lock"
