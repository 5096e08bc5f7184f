"""kill -9 between an actuation and its recorded outcome: the restart settles it and never repeats it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pdscale.controller.runtime.store import IntentOutcome, SqliteStore

HELPER = Path(__file__).resolve().parents[1] / "helpers" / "crash_daemon.py"
ROOT = Path(__file__).resolve().parents[2]


def _spawn(db: Path, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "tests" / "plugins")))}
    return subprocess.Popen(
        [sys.executable, str(HELPER), str(db), str(workdir), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.timeout(120)
def test_kill_9_mid_tick_resumes_without_repeating(tmp_path: Path) -> None:
    """A daemon killed with SIGKILL right after set_target took effect resumes with no duplicate call."""
    db = tmp_path / "state.db"
    first = _spawn(db, tmp_path, "--crash-after-set", "--ticks", "5")
    marker = tmp_path / "crash-point"
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
        assert time.monotonic() < deadline, "daemon never reached the crash point"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    store = SqliteStore(db)
    assert [(i.pool, i.target) for i in store.open_intents()] == [("prefill", 3)]
    store.close()

    second = _spawn(db, tmp_path, "--ticks", "3")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()

    calls = (tmp_path / "calls.log").read_text().split("\n")
    assert [c for c in calls if c] == ["prefill 3"]
    store = SqliteStore(db)
    try:
        settled = [i for i in store.intents() if i.pool == "prefill"]
        assert settled[0].outcome is IntentOutcome.APPLIED
        newest = store.recent(1)[0].decision.pools["prefill"]
        assert "paused" not in newest.guards, "the crash must not look like another owner's edit"
        assert newest.target == 3
    finally:
        store.close()
