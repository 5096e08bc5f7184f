"""The state DB damaged while the daemon runs (bytes scribbled over the middle of the file): one ERROR naming the
file and ``pdscale serve --config FILE --state-recover``, /readyz 503, the loop deciding on without actuating, and
admin calls that need the file answering FAILED_PRECONDITION with the fix instead of INTERNAL."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.daemon import Daemon
from pdscale.controller.runtime.settings import parse_settings
from pdscale.controller.runtime.store import StoreDamagedError
from pdscale.testing import FakeActuator, StaticMetricsSource
from tests.controller.test_admin_api import AUTH, BUSY, TOKEN, Harness, _settings

TICKS_BEFORE = 300
FIX = "--state-recover"


def _scribble(path: Path) -> None:
    """What a long run leaves (rows checkpointed into the file), then seeded random bytes over its middle half."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.seek(size // 4)
        fh.write(random.Random(18).randbytes(size // 2))


class Ticking:
    """The harness's loop ticking in its own thread until stopped; records what a tick raised."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.ticks = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.h.tick()
            except BaseException as exc:
                self.errors.append(exc)
                return
            self.ticks += 1
            time.sleep(0.002)

    def wait_ticks(self, n: int) -> None:
        deadline = time.monotonic() + 30
        while self.ticks < n and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(), tmp_path)
    for _ in range(TICKS_BEFORE):
        h.tick()
    yield h
    h.close()


def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_admin_calls_on_a_damaged_db_say_how_to_recover(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """While the loop ticks, a scribbled DB: reads and writes that need it get FAILED_PRECONDITION naming the fix."""
    loop = Ticking(harness)
    loop.wait_ticks(3)
    capsys.readouterr()
    _scribble(harness.store.path)  # type: ignore[arg-type]
    with grpc.insecure_channel(f"127.0.0.1:{harness.server.port}") as ch:
        stub = pb_grpc.AdminServiceStub(ch)
        calls = {
            "ListDecisions": lambda: stub.ListDecisions(pb.ListDecisionsRequest(page_size=1000)),
            "ExplainDecision": lambda: stub.ExplainDecision(pb.ExplainDecisionRequest(id=5)),
            "SetOverride": lambda: stub.SetOverride(
                pb.SetOverrideRequest(pool="decode", mode=pb.OVERRIDE_MODE_EXACT, replicas=4), metadata=AUTH
            ),
        }
        answers = {name: _status(call) for name, call in calls.items()}
        ticks_at_damage = loop.ticks
        loop.wait_ticks(ticks_at_damage + 5)
        status = stub.GetStatus(pb.GetStatusRequest())
    loop.stop.set()
    loop.thread.join(10)
    out = capsys.readouterr().out
    assert loop.errors == [], "a tick raised"
    assert loop.ticks >= ticks_at_damage + 5, "the loop stopped ticking"
    for name, (code, details) in answers.items():
        assert code is grpc.StatusCode.FAILED_PRECONDITION, name
        assert FIX in details, name
        assert str(harness.store.path) in details, name
    assert "decode" not in harness.rec.overrides, "a change that could not be stored was applied"
    assert [p.name for p in status.pools] == ["prefill", "decode"]  # GetStatus needs no file: it still answers
    assert out.count("state_db_damaged") == 1
    assert "state_write_failed" not in out
    assert "admin_call_failed" not in out


def _daemon(db: Path) -> Daemon:
    pools = [
        {"name": "prefill", "role": "prefill", "gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8},
        {"name": "decode", "role": "decode", "gpus_per_replica": 4, "min_replicas": 1, "max_replicas": 8},
    ]
    settings = parse_settings(
        {
            "tick_s": 30,
            "pools": pools,
            "policy": {"name": "static", "params": {"replicas": {"prefill": 2, "decode": 2}}},
            "forecasting": {"model": "last_value"},
            "metrics": {"source": "static"},
            "actuator": {"name": "fake"},
            "guards": {"hold_while_starting": False, "scale_down_window_s": 0, "max_step_down": 8},
            "state": {"path": str(db)},
        }
    )
    source = StaticMetricsSource.ok({"prefill": BUSY, "decode": BUSY})
    return Daemon(settings, source=source, actuator=FakeActuator({"prefill": 2, "decode": 2}))


def test_daemon_is_not_ready_once_the_db_is_found_damaged(tmp_path: Path) -> None:
    """A damaged DB found by a read during the run turns /readyz to 503; the loop keeps ticking, calls nothing."""
    d = _daemon(tmp_path / "state.db")
    d.telemetry.ready = True
    for i in range(TICKS_BEFORE):
        d.rec.run_once(1000.0 + 30 * i)
    assert d.ready()
    _scribble(tmp_path / "state.db")
    with pytest.raises(StoreDamagedError, match="--state-recover"):
        d.store.query(limit=1000)
    d.actuator.set_external_target("prefill", 1)  # type: ignore[attr-defined]
    calls_before = len(d.actuator.calls)  # type: ignore[attr-defined]
    result = d.rec.run_once(1000.0 + 30 * TICKS_BEFORE)
    assert not d.ready()
    assert len(d.actuator.calls) == calls_before  # type: ignore[attr-defined]
    assert result.outcomes["prefill"].outcome.value == "failed"
    d.store.close()
