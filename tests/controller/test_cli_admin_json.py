"""Admin CLI JSON: snake_case keys, 64-bit integers as numbers, enums as short lower-case names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.cli.admin_json import enum_short_name, to_plain
from pdscale.controller.cli.main import main
from tests.controller.test_admin_api import TOKEN, Harness, _settings


def test_int64_fields_are_numbers_under_proto_names() -> None:
    """budget_gpus (int64, which protobuf JSON prints as "32") comes out as the number 32."""
    data = to_plain(pb.GetStatusResponse(model="m", budget_gpus=32, ticks=3))
    assert data == {"model": "m", "budget_gpus": 32, "ticks": 3}


def test_enums_are_short_lower_case_names() -> None:
    """OVERRIDE_MODE_EXACT inside a nested pool status reads "exact"."""
    msg = pb.GetStatusResponse()
    pool = msg.pools.add(name="decode", target=2)
    pool.override.mode = pb.OVERRIDE_MODE_EXACT
    pool.override.replicas = 3
    assert to_plain(msg)["pools"] == [{"name": "decode", "target": 2, "override": {"mode": "exact", "replicas": 3}}]


def test_enum_short_name_drops_only_the_shared_prefix() -> None:
    """Each OverrideMode value loses OVERRIDE_MODE_ and nothing more."""
    enum = pb.OverrideMode.DESCRIPTOR
    assert [enum_short_name(enum, n) for n in (0, 1, 2, 3)] == ["unspecified", "exact", "min", "max"]


def test_maps_keep_their_keys() -> None:
    """A forecast's quantiles map keeps its "0.9" key and float value."""
    msg = pb.PoolStatus(name="p")
    fc = msg.forecasts.add(signal="s")
    fc.quantiles["0.9"] = 1.5
    assert to_plain(msg)["forecasts"] == [{"signal": "s", "quantiles": {"0.9": 1.5}}]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(), tmp_path)
    yield h
    h.close()


def test_admin_status_json_against_a_server(server: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """`pdscale admin status --json -` after an override prints snake_case, budget_gpus 64, mode "exact"."""
    server.tick()
    address = ["--address", f"127.0.0.1:{server.server.port}", "--token", TOKEN]
    assert main(["admin", "override", "decode", "exact", "3", *address]) == 0
    capsys.readouterr()
    assert main(["admin", "status", *address, "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["budget_gpus"] == 64
    assert "budgetGpus" not in data
    decode = next(p for p in data["pools"] if p["name"] == "decode")
    assert decode["override"]["mode"] == "exact"
    assert decode["gpus_per_replica"] == 4


def test_admin_status_table_reads_the_plain_keys(server: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """The status table shows the GPU count against the budget and the override as "exact 3"."""
    server.tick()
    address = ["--address", f"127.0.0.1:{server.server.port}", "--token", TOKEN]
    assert main(["admin", "override", "decode", "exact", "3", *address]) == 0
    capsys.readouterr()
    assert main(["admin", "status", *address]) == 0
    out = capsys.readouterr().out
    assert "/64" in out
    assert "exact 3" in out


def test_admin_watch_json_lines_are_plain(server: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """`pdscale admin watch --count 1 --json -` prints the decision with "id": 1 (int64) and time_s."""
    import threading
    import time

    def tick_soon() -> None:
        time.sleep(1.0)  # after the watch has subscribed
        server.tick()

    ticker = threading.Thread(target=tick_soon)
    ticker.start()
    address = ["--address", f"127.0.0.1:{server.server.port}", "--token", TOKEN]
    assert main(["admin", "watch", "--count", "1", *address, "--json", "-"]) == 0
    ticker.join()
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == 1
    assert "time_s" in data
    assert "timeS" not in data


def test_status_marks_every_runtime_field_from_the_file_at_start(
    server: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any admin change, status says policy, SLO, budget and each pool's replicas come from the file."""
    server.tick()
    capsys.readouterr()
    assert main(["admin", "status", "--address", f"127.0.0.1:{server.server.port}", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sources"] == dict.fromkeys(("policy", "policy_params", "slo", "budget_gpus", "paused_all"), "file")
    assert {p["name"]: p["sources"]["replicas"] for p in data["pools"]} == {"prefill": "file", "decode": "file"}


def test_status_marks_admin_changes_and_overrides(server: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """After `admin slo` and `admin override`, the SLO reads "admin" and the overridden pool "override"."""
    server.tick()
    address = ["--address", f"127.0.0.1:{server.server.port}", "--token", TOKEN]
    assert main(["admin", "slo", "--ttft-ms", "800", *address]) == 0
    assert main(["admin", "override", "decode", "exact", "3", *address]) == 0
    assert main(["admin", "pause", "prefill", *address]) == 0
    capsys.readouterr()
    assert main(["admin", "status", *address, "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["sources"]["slo"], data["sources"]["budget_gpus"]) == ("admin", "file")
    pools = {p["name"]: p["sources"] for p in data["pools"]}
    assert pools["decode"] == {"replicas": "override", "paused": "file"}
    assert pools["prefill"] == {"replicas": "file", "paused": "admin"}


def test_status_table_names_the_sources(server: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    """The human status line says the SLO is from admin and the budget from the file."""
    server.tick()
    address = ["--address", f"127.0.0.1:{server.server.port}", "--token", TOKEN]
    assert main(["admin", "slo", "--itl-ms", "40", *address]) == 0
    capsys.readouterr()
    assert main(["admin", "status", *address]) == 0
    out = capsys.readouterr().out
    assert "quantile 0.99 (from admin)" in out
    assert "budget 64 GPUs (from file)" in out
    assert "file 1-" in out


def test_restored_admin_change_is_marked_admin(tmp_path: Path) -> None:
    """A budget stored by an earlier run and restored at start-up is marked "admin", not "file"."""
    from pdscale.controller.admin.controls import Controls
    from pdscale.controller.runtime.plugins import Registry

    first = Harness(_settings(listen="127.0.0.1:0", token=None), tmp_path)
    try:
        first.controls.update_budget(48)
    finally:
        first.close()
    second = Harness(_settings(listen="127.0.0.1:0", token=None), tmp_path)
    try:
        controls = Controls(second.rec, second.store, Registry())
        controls.restore()
        assert controls.status_sources()["budget_gpus"] == "admin"
        assert second.controls.status_sources()["budget_gpus"] == "file"
    finally:
        second.close()
