"""Profiles: JSON export and import, measured CSV tables, interpolation and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdscale.simulator.perf import load_perf_model, load_profile_perf_model
from pdscale.simulator.profile import (
    DECODE_BATCHES,
    DECODE_CONTEXTS,
    PREFILL_BATCHES,
    PREFILL_PROMPTS,
    PROFILE_FORMAT,
    ProfileError,
    export_profile,
    load_profile,
    load_profile_csv,
)

SAMPLE = Path(__file__).resolve().parents[2] / "simulator" / "data" / "profile_sample_h100_llama2_70b_tp4.csv"
HEADER = "phase,prompt_tokens,batch,context_tokens,time_ms\n"


def _csv(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "prof.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


class TestExport:
    def test_export_has_the_documented_keys_and_grid(self, tmp_path: Path) -> None:
        """The JSON profile holds the memory figures and the full prefill and decode grids."""
        perf = load_perf_model("llama-3.1-70b", 4)
        data = json.loads(export_profile(perf, tmp_path / "p.json").read_text(encoding="utf-8"))
        assert data["format"] == PROFILE_FORMAT
        assert (data["model"], data["tp"], data["dtype"], data["gpus_per_replica"]) == ("llama-3.1-70b", 4, "bf16", 4)
        assert (data["kv_bytes_per_token"], data["max_kv_tokens"]) == (perf.kv_bytes_per_token, perf.max_kv_tokens)
        assert {(e["prompt_tokens"], e["batch"]) for e in data["prefill"]} == {
            (p, b) for p in PREFILL_PROMPTS for b in PREFILL_BATCHES
        }
        assert {(e["batch"], e["context_tokens"]) for e in data["decode"]} == {
            (b, c) for b in DECODE_BATCHES for c in DECODE_CONTEXTS
        }
        assert (min(PREFILL_PROMPTS), max(PREFILL_PROMPTS), max(PREFILL_BATCHES)) == (32, 32768, 16)
        assert (max(DECODE_BATCHES), min(DECODE_CONTEXTS), max(DECODE_CONTEXTS)) == (512, 128, 32768)

    def test_decode_entries_are_per_sequence_context(self, tmp_path: Path) -> None:
        """A decode entry's time is the step for `batch` sequences of `context_tokens` each."""
        perf = load_perf_model("llama-3.1-70b", 4)
        data = json.loads(export_profile(perf, tmp_path / "p.json").read_text(encoding="utf-8"))
        entry = next(e for e in data["decode"] if e["batch"] == 64 and e["context_tokens"] == 2048)
        assert entry["time_ms"] == pytest.approx(perf.decode_step_ms(64, 64 * 2048.0), abs=1e-3)


class TestRoundtrip:
    def test_grid_points_are_reproduced(self, tmp_path: Path) -> None:
        """A loaded profile returns the exported times at the grid points."""
        perf = load_perf_model("llama-3.1-70b", 8)
        prof = load_profile(export_profile(perf, tmp_path / "p.json"))
        assert prof.max_kv_tokens == perf.max_kv_tokens
        assert prof.gpus_per_replica == 8
        for p in (32, 2048, 32768):
            assert prof.prefill_uniform_ms(p, 4) == pytest.approx(perf.prefill_uniform_ms(p, 4), rel=1e-5)
        assert prof.decode_step_ms(96, 96 * 4096.0) == pytest.approx(perf.decode_step_ms(96, 96 * 4096.0), rel=1e-5)

    def test_between_grid_points_is_close(self, tmp_path: Path) -> None:
        """Off the grid the interpolated profile stays within 5% of the model it was exported from."""
        perf = load_perf_model("llama-3.1-70b", 4)
        prof = load_profile(export_profile(perf, tmp_path / "p.json"))
        for prompt, batch in ((700, 3), (5000, 1), (300, 11), (12000, 2)):
            assert prof.prefill_uniform_ms(prompt, batch) == pytest.approx(
                perf.prefill_uniform_ms(prompt, batch), rel=0.05
            )
        for batch, ctx in ((5, 1000), (100, 3000), (300, 700)):
            assert prof.decode_step_ms(batch, batch * ctx) == pytest.approx(
                perf.decode_step_ms(batch, batch * ctx), rel=0.05
            )

    def test_scaled_profile(self, tmp_path: Path) -> None:
        """A profile model scales every time like the roofline model."""
        prof = load_profile(export_profile(load_perf_model(), tmp_path / "p.json"))
        assert prof.scaled(1.5).decode_step_ms(8, 8000.0) == pytest.approx(1.5 * prof.decode_step_ms(8, 8000.0))

    def test_bad_json_profile_names_the_entry(self, tmp_path: Path) -> None:
        """A JSON profile entry without time_ms is named by phase and index."""
        path = tmp_path / "p.json"
        export_profile(load_perf_model(), path)
        data = json.loads(path.read_text(encoding="utf-8"))
        del data["decode"][3]["time_ms"]
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ProfileError, match=r"p\.json: decode\[3\]: missing field 'time_ms'"):
            load_profile(path)

    def test_wrong_format_is_rejected(self, tmp_path: Path) -> None:
        """A JSON file that is not a pdscale profile is rejected."""
        path = tmp_path / "p.json"
        path.write_text('{"format": "other"}', encoding="utf-8")
        with pytest.raises(ProfileError, match="'format' must be"):
            load_profile(path)


class TestMeasuredCsv:
    def test_sample_reproduces_its_measurements(self) -> None:
        """The shipped sample (Splitwise TP4 medians) returns its own measured times at its points."""
        prof = load_profile_perf_model(SAMPLE, 327_680, 400_000, 4)
        assert prof.prefill_uniform_ms(2048, 1) == pytest.approx(200.68)
        assert prof.prefill_uniform_ms(512, 16) == pytest.approx(874.35)
        assert prof.decode_step_ms(32, 32 * 576.0) == pytest.approx(36.88)
        assert prof.gpus_per_replica == 4

    def test_interpolates_between_points(self, tmp_path: Path) -> None:
        """Times between two measured points are interpolated linearly."""
        path = _csv(tmp_path, "prefill,100,1,,10\nprefill,300,1,,30\ndecode,,1,100,5\ndecode,,3,100,9\n")
        prof = load_profile_csv(path, kv_bytes_per_token=1, max_kv_tokens=10, gpus_per_replica=1)
        assert prof.prefill_uniform_ms(200, 1) == pytest.approx(20.0)
        assert prof.decode_step_ms(2, 200.0) == pytest.approx(7.0)

    def test_repeated_points_are_averaged(self, tmp_path: Path) -> None:
        """Two measurements of the same point count as their mean."""
        path = _csv(tmp_path, "prefill,100,1,,10\nprefill,100,1,,20\ndecode,,1,100,5\n")
        prof = load_profile_csv(path, kv_bytes_per_token=1, max_kv_tokens=10, gpus_per_replica=1)
        assert prof.prefill_uniform_ms(100, 1) == pytest.approx(15.0)

    def test_extrapolation_never_gets_faster(self, tmp_path: Path) -> None:
        """Beyond the largest batch and context the time keeps growing."""
        prof = load_profile_csv(SAMPLE, kv_bytes_per_token=1, max_kv_tokens=10, gpus_per_replica=4)
        times = [prof.decode_step_ms(b, b * 600.0) for b in (64, 128, 256)]
        assert times == sorted(times)
        assert prof.prefill_uniform_ms(16384, 1) > prof.prefill_uniform_ms(8192, 1)

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("prefill,100,1,,abc\ndecode,,1,1,1\n", r"prof\.csv:2: field 'time_ms' must be a number"),
            ("decode,,1,1,1\nprefill,100,0,,5\n", r"prof\.csv:3: field 'batch' must be a finite number >= 1"),
            ("prefill,100,1,,5\ndecode,,1,,5\n", r"prof\.csv:3: field 'context_tokens' must be a number"),
            ("prefill,100,1,,5\nwarmup,1,1,1,1\n", r"prof\.csv:3: phase must be 'prefill' or 'decode'"),
            ("prefill,100,1,,5\ndecode,,1,1\n", r"prof\.csv:3: expected 5 fields, got 4"),
            ("prefill,100.5,1,,5\ndecode,,1,1,1\n", r"prof\.csv:2: field 'prompt_tokens' must be a whole number"),
            ("prefill,100,1,,5\n", r"prof\.csv: no decode measurements"),
        ],
    )
    def test_malformed_rows_name_file_and_line(self, tmp_path: Path, body: str, message: str) -> None:
        """Each malformed row is reported with the file, line and field."""
        with pytest.raises(ProfileError, match=message):
            load_profile_csv(_csv(tmp_path, body), kv_bytes_per_token=1, max_kv_tokens=1, gpus_per_replica=1)

    def test_wrong_header(self, tmp_path: Path) -> None:
        """A CSV with another header is rejected at line 1."""
        path = tmp_path / "prof.csv"
        path.write_text("a,b\n1,2\n", encoding="utf-8")
        with pytest.raises(ProfileError, match=r"prof\.csv:1: missing column\(s\) .*; header must be"):
            load_profile_csv(path, kv_bytes_per_token=1, max_kv_tokens=1, gpus_per_replica=1)
