"""The role-flip overlay survives a restart: which worker serves which role is kept in a file, half-done flips are
finished by ``resume_pending``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pdscale.actuators.flip_overlay import FlipOverlay
from pdscale.actuators.http_flip import HttpRoleFlipActuator
from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass, RoleFlip
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.testing import FakeActuator
from tests.actuators.test_http_flip import POOLS, Engine, engine

__all__ = ["engine"]  # the fixture, shared with test_http_flip


def make(url: str, base: FakeActuator, path: Path | None, **resources: Any) -> HttpRoleFlipActuator:
    env = PluginEnv(resources={"base_actuator": base, **resources})
    params: dict[str, Any] = {"url": url + "/$replica/v1/pd_role", "retry_base_s": 0.0}
    if path is not None:
        params["overlay_path"] = str(path)
    return HttpRoleFlipActuator(POOLS, params, env)


def test_restart_knows_which_worker_serves_which_role(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """A new actuator on the same overlay file regroups the flipped worker into decode."""
    url, _ = engine
    base = FakeActuator({"prefill": 2, "decode": 2})
    make(url, base, tmp_path / "flips.json").flip_roles(RoleFlip("prefill", "decode"))
    again = make(url, base, tmp_path / "flips.json")
    assert (again.target_size("prefill"), again.target_size("decode")) == (1, 3)
    assert "prefill-1" in {r.id for r in again.replicas("decode")}


def test_default_file_sits_beside_the_state_store(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """Without overlay_path, the daemon's state path names the file (<state.path>.flips.json)."""
    url, _ = engine
    base = FakeActuator({"prefill": 2, "decode": 2})
    state = tmp_path / "state.db"
    make(url, base, None, state_path=str(state)).flip_roles(RoleFlip("prefill", "decode"))
    data = json.loads((tmp_path / "state.db.flips.json").read_text())
    assert data["where"] == {"prefill-1": "decode"}
    assert data["pending"] == {}


def test_interrupted_flip_is_finished_by_resume(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """A worker left pending by a crash counts in its old pool until resume_pending sends its flip again."""
    url, e = engine
    base = FakeActuator({"prefill": 2, "decode": 2})
    FlipOverlay(tmp_path / "flips.json", "test").begin("prefill-1", "prefill", "decode")  # the process died here
    act = make(url, base, tmp_path / "flips.json")
    assert act.target_size("decode") == 2
    assert act.resume_pending() == ["prefill-1"]
    assert e.calls == [("/prefill-1/v1/pd_role", {"role": "decode", "drain_timeout": 120})]
    assert (act.target_size("prefill"), act.target_size("decode")) == (1, 3)
    assert act.overlay.pending == {}


def test_interrupted_return_home_ends_with_the_home_pool_shrunk(
    engine: tuple[str, type[Engine]], tmp_path: Path
) -> None:
    """A worker killed on its way home to be removed is flipped home and its home pool set to the recorded size."""
    url, e = engine
    base = FakeActuator({"prefill": 3, "decode": 0})
    overlay = FlipOverlay(tmp_path / "flips.json", "test")
    for rid in ("prefill-1", "prefill-2"):
        overlay.begin(rid, "prefill", "decode")
        overlay.commit(rid)
    overlay.begin("prefill-1", "decode", "prefill", home_target=2)  # the process died here
    act = make(url, base, tmp_path / "flips.json")
    assert act.resume_pending() == ["prefill-1"]
    assert e.calls == [("/prefill-1/v1/pd_role", {"role": "prefill", "drain_timeout": 120})]
    assert base.calls == [("set_target", "prefill", 2)]
    assert (act.target_size("prefill"), act.target_size("decode")) == (1, 1)
    assert json.loads((tmp_path / "flips.json").read_text())["pending"] == {}


def test_resume_failure_leaves_the_worker_where_it_was(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """A resumed flip the engine refuses leaves the worker in its old pool, nothing pending."""
    url, e = engine
    e.status = 400
    base = FakeActuator({"prefill": 2, "decode": 2})
    FlipOverlay(tmp_path / "flips.json", "test").begin("prefill-1", "prefill", "decode")
    act = make(url, base, tmp_path / "flips.json")
    assert act.resume_pending() == []
    assert (act.target_size("prefill"), act.target_size("decode")) == (2, 2)
    assert json.loads((tmp_path / "flips.json").read_text())["pending"] == {}


def test_pending_worker_the_base_removed_is_dropped(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """resume_pending sends nothing for a pending worker that no longer exists."""
    url, e = engine
    base = FakeActuator({"prefill": 2, "decode": 2})
    FlipOverlay(tmp_path / "flips.json", "test").begin("prefill-7", "prefill", "decode")
    act = make(url, base, tmp_path / "flips.json")
    assert act.resume_pending() == []
    assert e.calls == []
    assert act.overlay.pending == {}


def test_standby_sees_the_leaders_flips(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """An actuator built before another process flipped re-reads the changed file."""
    url, _ = engine
    base = FakeActuator({"prefill": 2, "decode": 2})
    standby = make(url, base, tmp_path / "flips.json")
    assert standby.target_size("decode") == 2
    make(url, base, tmp_path / "flips.json").flip_roles(RoleFlip("prefill", "decode"))
    assert standby.target_size("decode") == 3


def test_dry_run_writes_no_overlay(engine: tuple[str, type[Engine]], tmp_path: Path) -> None:
    """A dry-run flip leaves no file behind."""
    url, _ = engine
    env = PluginEnv(resources={"base_actuator": FakeActuator({"prefill": 2, "decode": 2})})
    params = {"url": url + "/$replica/v1/pd_role", "overlay_path": str(tmp_path / "f.json"), "dry_run": True}
    HttpRoleFlipActuator(POOLS, params, env).flip_roles(RoleFlip("prefill", "decode"))
    assert not (tmp_path / "f.json").exists()


def test_unreadable_overlay_names_the_file_and_the_fix(tmp_path: Path) -> None:
    """A damaged overlay file is a permanent error that names it and says what deleting it does."""
    (tmp_path / "flips.json").write_text("{not json")
    with pytest.raises(ActuationError, match=r"flips\.json is unreadable.*delete it") as err:
        FlipOverlay(tmp_path / "flips.json", "http_role_flip")
    assert err.value.error_class is ErrorClass.PERMANENT


@pytest.mark.integration_k8s
def test_home_pool_shrink_spares_the_worker_flipped_away(tmp_path: Path) -> None:
    """Shrinking prefill on Kubernetes removes a prefill-serving pod, never the one flipped to decode."""
    from pdscale.actuators.kubernetes import KubernetesActuator
    from pdscale.controller.core.types import PoolRole
    from pdscale.controller.runtime.settings import PoolSettings
    from tests.helpers.k8s_emulator import K8sEmulator, running_emulator, write_kubeconfig
    from tests.helpers.role_engines import role_engines

    pools = {
        n: PoolSettings(name=n, role=PoolRole(n), gpus_per_replica=1, max_replicas=8, actuator={"name": n})
        for n in ("prefill", "decode")
    }
    with running_emulator(K8sEmulator()) as (emu, url), role_engines(hold_s=0.0) as engines:
        emu.create("deployments", "prefill", 3)
        emu.create("deployments", "decode", 1)
        kube = write_kubeconfig(tmp_path / "kubeconfig", url)
        base = KubernetesActuator(pools, {"kubeconfig": str(kube), "retry_base_s": 0.0}, PluginEnv())
        params = {"url": engines.url + "/$replica/v1/pd_role", "overlay_path": str(tmp_path / "f.json")}
        act = HttpRoleFlipActuator(pools, params, PluginEnv(resources={"base_actuator": base}))
        act.flip_roles(RoleFlip("prefill", "decode"))
        [flipped] = [w for w, _ in engines.calls]
        act.set_target("prefill", 1)
        left = {p["metadata"]["name"] for p in emu.pods_of("prefill") if not p["metadata"].get("deletionTimestamp")}
        assert flipped in left
        assert len(left) == 2
        assert (act.target_size("prefill"), act.target_size("decode")) == (1, 2)


def test_two_writers_never_lose_each_others_changes(tmp_path: Path) -> None:
    """A second process's overlay, read before the first one's flip, keeps that flip when it writes its own."""
    first = FlipOverlay(tmp_path / "flips.json", "test")
    second = FlipOverlay(tmp_path / "flips.json", "test")  # e.g. a standby, built earlier
    first.begin("prefill-1", "prefill", "decode")
    first.commit("prefill-1")
    second.begin("decode-0", "decode", "prefill")
    data = json.loads((tmp_path / "flips.json").read_text())
    assert data["where"] == {"prefill-1": "decode"}
    assert data["pending"] == {"decode-0": {"from": "decode", "to": "prefill"}}
