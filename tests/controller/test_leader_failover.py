"""Two daemon processes electing a leader over a Lease on the emulated API server: a killed leader is replaced,
a partitioned leader steps down before its Lease expires, and no scale write is ever made by a non-leader (as
the API server logs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.leader_cluster import LeaderCluster, Timings, leader_cluster

pytestmark = [pytest.mark.integration_k8s, pytest.mark.slow, pytest.mark.timeout(180)]

TIMINGS = Timings(lease_s=1.0, renew_s=0.7, retry_s=0.2, tick_s=0.1)


def _leader_then_standby(c: LeaderCluster) -> None:
    c.start("a")
    c.wait(lambda: c.holder() == "a" and c.wrote_scale("a"), what="a leading and scaling")
    c.start("b")
    c.wait(lambda: '"leader_standby"' in c.log("b"), what="b standing by")


def _events(c: LeaderCluster, identity: str) -> list[str]:
    out = []
    for line in c.log(identity).splitlines():
        try:
            out.append(str(json.loads(line).get("event")))
        except ValueError:
            continue
    return out


def test_killed_leader_is_replaced(tmp_path: Path) -> None:
    """kill -9 of the leader: the standby takes the Lease (one transition) and scales; no non-leader write."""
    with leader_cluster(tmp_path, TIMINGS) as c:
        _leader_then_standby(c)
        killed_at = c.kill("a")
        c.wait(lambda: c.holder() == "b" and c.wrote_scale("b", killed_at), what="b taking over")
        lease = c.emu.lease("pdscale") or {}
        assert lease["spec"]["leaseTransitions"] == 1
        assert c.emu.writes_by_non_leader() == []
        assert "leader_took_over" in _events(c, "b")


def test_standby_waits_out_the_lease(tmp_path: Path) -> None:
    """The standby takes a dead leader's Lease only once it stood still for the lease duration."""
    with leader_cluster(tmp_path, TIMINGS) as c:
        _leader_then_standby(c)
        c.kill("a")
        c.wait(lambda: c.holder() == "b", what="b taking the lease")
        writes = list(c.emu.lease_writes)
    last_a = max(t for t, client, _, _ in writes if client == "a")
    first_b = min(t for t, client, holder, _ in writes if client == "b" and holder == "b")
    assert first_b - last_a >= TIMINGS.lease_s


def test_partitioned_leader_steps_down_first(tmp_path: Path) -> None:
    """A leader cut off from the Lease (its scale calls still get through) makes its last write before the
    standby takes the Lease, and says it stepped down: the two never both actuate."""
    timings = Timings(lease_s=2.0, renew_s=1.0, retry_s=0.2, tick_s=0.1)  # a margin of 1 s for one call in flight
    with leader_cluster(tmp_path, timings) as c:
        _leader_then_standby(c)
        c.emu.partition("a", scope="leases")
        took_at = c.wait(lambda: c.holder() == "b" and c.wrote_scale("b"), what="b taking over")
        c.wait(lambda: "leader_stepped_down" in _events(c, "a"), what="a stepping down")
        c.wait(lambda: c.wrote_scale("b", took_at), what="b scaling on")  # a's fence had its chance to fail
        writes, scales = list(c.emu.lease_writes), list(c.emu.scale_writes)
        assert c.emu.writes_by_non_leader() == []
    b_acquired = min(t for t, client, holder, _ in writes if client == "b" and holder == "b")
    last_write_a = max(w.time_s for w in scales if w.client == "a")
    assert last_write_a < b_acquired


def test_file_lock_standby_waits_for_a_killed_leader(tmp_path: Path) -> None:
    """One host, file lock mode: the standby writes nothing while the leader lives, and scales once it is killed."""
    with leader_cluster(tmp_path, TIMINGS) as c:
        c.start("a", mode="file")
        c.wait(lambda: c.wrote_scale("a"), what="a scaling")
        c.start("b", mode="file")
        c.wait(lambda: '"leader_standby"' in c.log("b"), what="b standing by")
        c.wait(lambda: len([w for w in c.emu.scale_writes if w.client == "a"]) >= 10, what="a scaling on")
        killed_at = c.kill("a")
        early = [w for w in c.emu.scale_writes if w.client == "b" and w.time_s <= killed_at]
        c.wait(lambda: c.wrote_scale("b", killed_at), what="b taking over")
    assert early == []
