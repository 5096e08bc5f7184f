"""Two daemons on one state file with leader election (file lock mode, in one process): the standby serves reads,
names the leader, refuses writes and runs no tick; it takes over from the state store when the leader stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.core.types import Override, OverrideMode
from pdscale.controller.daemon import Daemon
from pdscale.controller.runtime.leader import Role
from pdscale.controller.runtime.settings import parse_settings
from pdscale.controller.runtime.store import SqliteStore

RETRY_S = 0.05


def _daemon(tmp: Path, identity: str, mode: str = "file") -> Daemon:
    pool = {"gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8, "initial_replicas": 2}
    data: dict[str, Any] = {
        "tick_s": 0.05,
        "pools": [{"name": "prefill", "role": "prefill", **pool}, {"name": "decode", "role": "decode", **pool}],
        "policy": {"name": "static", "params": {"replicas": {"prefill": 3}}},
        "forecasting": {"model": "last_value"},
        "metrics": {"source": "static"},
        "actuator": {"name": "fake"},
        "admin": {"listen": "127.0.0.1:0"},
        "telemetry": {"enabled": False},
        "state": {"path": str(tmp / "state.db")},
        "leader_election": {
            "mode": mode,
            "identity": identity,
            "retry_period_s": RETRY_S,
            "renew_deadline_s": 0.2,
            "lease_duration_s": 0.3,
        },
    }
    return Daemon(parse_settings(data, f"daemon-{identity}"))


async def _until(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def _pair(tmp: Path) -> tuple[Daemon, Daemon, list[asyncio.Task[int]]]:
    a = _daemon(tmp, "a")
    tasks = [asyncio.create_task(a.run(install_signals=False))]
    await _until(lambda: a.leader_status().role is Role.LEADER and a.telemetry.ticks > 0)
    b = _daemon(tmp, "b")
    tasks.append(asyncio.create_task(b.run(install_signals=False)))
    await _until(lambda: b.started.is_set() and b.leader_status().leader == "a")
    return a, b, tasks


async def _stop(tasks: list[asyncio.Task[int]], *daemons: Daemon) -> None:
    for d in daemons:
        d.stop()
    await asyncio.gather(*tasks)


@pytest.mark.timeout(60)
async def test_standby_status_names_the_leader(tmp_path: Path) -> None:
    """GetStatus on the standby answers with role standby, the leader's identity and its own."""
    a, b, tasks = await _pair(tmp_path)
    try:
        assert b.admin is not None
        async with grpc.aio.insecure_channel(b.admin.address) as channel:
            st = await pb_grpc.AdminServiceStub(channel).GetStatus(pb.GetStatusRequest())
    finally:
        await _stop(tasks, a, b)
    assert (st.role, st.leader, st.identity) == ("standby", "a", "b")


@pytest.mark.timeout(60)
async def test_standby_refuses_writes_naming_the_leader(tmp_path: Path) -> None:
    """A write sent to the standby gets FAILED_PRECONDITION naming the leader, and changes nothing."""
    a, b, tasks = await _pair(tmp_path)
    try:
        assert b.admin is not None
        async with grpc.aio.insecure_channel(b.admin.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await pb_grpc.AdminServiceStub(channel).Pause(pb.PauseRequest(pool="decode", reason="x"))
        paused = set(b.store.paused())
    finally:
        await _stop(tasks, a, b)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "send writes to the leader: a" in (err.value.details() or "")
    assert paused == set()


@pytest.mark.timeout(60)
async def test_standby_runs_no_tick(tmp_path: Path) -> None:
    """While the leader ticks, the standby decides, records and actuates nothing."""
    a, b, tasks = await _pair(tmp_path)
    try:
        start = a.telemetry.ticks
        await _until(lambda: a.telemetry.ticks >= start + 10)
    finally:
        await _stop(tasks, a, b)
    assert (b.telemetry.ticks, b.actuator.calls) == (0, [])  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
async def test_takeover_resumes_from_the_state_store(tmp_path: Path) -> None:
    """When the leader stops, the standby takes over with the leader's pause state and override."""
    a, b, tasks = await _pair(tmp_path)
    try:
        a.controls.pause("decode", "maintenance")
        a.controls.set_override("prefill", OverrideMode.MAX, 4, None, 0.0, "cap")
        a.stop()
        await tasks[0]
        await _until(lambda: b.leader_status().role is Role.LEADER and b.telemetry.ticks > 0)
        resumed = (b.rec.paused, b.rec.overrides.get("prefill"))
    finally:
        await _stop(tasks[1:], b)
    assert resumed == ({"decode"}, Override("prefill", OverrideMode.MAX, 4, None, "cap"))


@pytest.mark.timeout(60)
async def test_takeover_continues_decision_ids(tmp_path: Path) -> None:
    """The new leader numbers its decisions after the old leader's: every tick of both is kept in the store."""
    a, b, tasks = await _pair(tmp_path)
    try:
        a.stop()
        await tasks[0]
        await _until(lambda: b.telemetry.ticks >= 5)
    finally:
        await _stop(tasks[1:], b)
    store = SqliteStore(tmp_path / "state.db")
    try:
        kept = store.count()
    finally:
        store.close()
    assert kept == a.telemetry.ticks + b.telemetry.ticks


@pytest.mark.timeout(60)
async def test_without_election_status_says_single(tmp_path: Path) -> None:
    """With leader election off, GetStatus reports role single and names this daemon as the leader."""
    d = _daemon(tmp_path, "solo", mode="off")
    task = asyncio.create_task(d.run(install_signals=False))
    try:
        await _until(lambda: d.telemetry.ticks > 0)
        assert d.admin is not None
        async with grpc.aio.insecure_channel(d.admin.address) as channel:
            st = await pb_grpc.AdminServiceStub(channel).GetStatus(pb.GetStatusRequest())
    finally:
        await _stop([task], d)
    assert (st.role, st.leader, st.identity) == ("single", "solo", "solo")


@pytest.mark.timeout(60)
async def test_leader_gauge_tells_leader_from_standby(tmp_path: Path) -> None:
    """pdscale_leader is 1 on the leader and 0 on the standby."""
    a, b, tasks = await _pair(tmp_path)
    try:
        values = [d.telemetry.registry.get_sample_value("pdscale_leader") for d in (a, b)]
    finally:
        await _stop(tasks, a, b)
    assert values == [1.0, 0.0]
