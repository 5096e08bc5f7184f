"""pdscale.profiles: one reader and one interpolation rule, so controller and simulator agree on every file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pdscale.controller.runtime.profile import load_profile as controller_profile
from pdscale.profiles import ProfileError, read_profile
from pdscale.simulator.perf import load_perf_model
from pdscale.simulator.profile import export_profile, load_profile, load_profile_csv

FACTS = {"kv_bytes_per_token": 327_680, "max_kv_tokens": 400_000, "gpus_per_replica": 4}
PROMPTS = (1, 100, 512, 700, 2048, 5000, 40_000)
BATCHES = (1, 2, 3, 5, 8, 16, 64, 300)
CONTEXTS = (0, 64, 1024, 3000, 9000, 70_000)


def _csv(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "prof.csv"
    path.write_text("phase,prompt_tokens,batch,context_tokens,time_ms\n" + rows, encoding="utf-8")
    return path


def _agree(ctl: object, sim: object) -> None:
    """Same step time, in and beyond the table, from the controller's Profile and the simulator's model."""
    for p, b in itertools.product(PROMPTS, BATCHES):
        assert ctl.prefill_ms(p, b) == pytest.approx(sim.prefill_uniform_ms(p, b), rel=1e-12), (p, b)  # type: ignore[attr-defined]
    for b, c in itertools.product(BATCHES, CONTEXTS):
        assert ctl.decode_step_ms(b, c) == pytest.approx(sim.decode_step_ms(b, float(b * c)), rel=1e-12), (b, c)  # type: ignore[attr-defined]


def test_csv_profile_gives_the_same_step_times_to_both(tmp_path: Path) -> None:
    """A measured CSV read by the controller and by the simulator gives the same times at every point."""
    path = _csv(
        tmp_path,
        "prefill,512,1,,60\nprefill,2048,1,,200\nprefill,512,4,,210\nprefill,2048,4,,790\n"
        "decode,,1,1024,20\ndecode,,1,4096,21.5\ndecode,,32,1024,30\ndecode,,32,4096,41\ndecode,,32,4096,43\n",
    )
    _agree(controller_profile(str(path), FACTS), load_profile_csv(path, **FACTS))


def test_json_profile_gives_the_same_step_times_to_both(tmp_path: Path) -> None:
    """An exported JSON profile read by the controller and by the simulator gives the same times."""
    path = export_profile(load_perf_model("llama-3.1-70b", 4), tmp_path / "p.json")
    _agree(controller_profile(str(path)), load_profile(path))


def test_batch_one_table_reads_decode_at_the_total_context(tmp_path: Path) -> None:
    """With only batch-1 rows, a batch-64 decode step costs the batch-1 step at 64x the context (weights once)."""
    path = _csv(tmp_path, "prefill,2048,1,,200\ndecode,,1,1024,20\ndecode,,1,4096,21.5\n")
    # The batch-1 line: 20 ms at 1024 tokens, +1.5 ms per 3072 tokens; 64 x 1024 = 65536 tokens of KV read.
    expected = 21.5 + (64 * 1024 - 4096) * 1.5 / 3072
    ctl, sim = controller_profile(str(path), FACTS), load_profile_csv(path, **FACTS)
    assert ctl.decode_step_ms(64, 1024) == pytest.approx(expected)
    assert sim.decode_step_ms(64, 64 * 1024.0) == pytest.approx(expected)


def test_batch_one_table_reads_prefill_at_the_total_tokens(tmp_path: Path) -> None:
    """With only batch-1 rows, four 512-token prompts together cost one 2048-token prompt."""
    path = _csv(tmp_path, "prefill,512,1,,60\nprefill,2048,1,,200\ndecode,,1,1024,20\n")
    ctl, sim = controller_profile(str(path), FACTS), load_profile_csv(path, **FACTS)
    assert ctl.prefill_ms(512, 4) == pytest.approx(200.0)
    assert sim.prefill_uniform_ms(512, 4) == pytest.approx(200.0)


def test_repeated_points_are_averaged(tmp_path: Path) -> None:
    """Two measurements of one point count as their mean."""
    path = _csv(tmp_path, "prefill,512,1,,60\nprefill,512,1,,80\ndecode,,1,1024,20\n")
    assert read_profile(path, FACTS).step_times().prefill_ms(512, 1) == pytest.approx(70.0)


def test_csv_without_the_replica_facts_is_refused(tmp_path: Path) -> None:
    """A CSV carries no replica facts: reading one without them names the missing ones."""
    path = _csv(tmp_path, "prefill,512,1,,60\ndecode,,1,1024,20\n")
    with pytest.raises(ProfileError, match="max_kv_tokens"):
        read_profile(path, {"kv_bytes_per_token": 1, "gpus_per_replica": 1})


def test_short_row_names_file_and_line(tmp_path: Path) -> None:
    """A row with fewer fields than the header is refused with its line number."""
    path = _csv(tmp_path, "prefill,512,1,,60\ndecode,,1,1024\n")
    with pytest.raises(ProfileError, match=r"prof\.csv:3: expected 5 fields, got 4"):
        read_profile(path, FACTS)
