"""`pdscale perf`: JSON keys, table output, profile export and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pdscale.simulator.perf import load_perf_model
from pdscale.simulator.perf_cli import add_parser, main

ARGS = ["--model", "llama-3.1-70b", "--tp", "4", "--prompt-tokens", "2048", "--batch", "1", "--context", "2048"]


def test_json_stdout_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """--json - prints prefill_ms, decode_step_ms, kv_bytes_per_token and max_kv_tokens."""
    assert main([*ARGS, "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    perf = load_perf_model("llama-3.1-70b", 4)
    assert out["prefill_ms"] == pytest.approx(perf.prefill_uniform_ms(2048, 1), abs=1e-3)
    assert out["decode_step_ms"] == pytest.approx(perf.decode_step_ms(1, 2048.0), abs=1e-3)
    assert out["kv_bytes_per_token"] == 327_680
    assert out["max_kv_tokens"] == perf.max_kv_tokens


def test_context_is_per_sequence(capsys: pytest.CaptureFixture[str]) -> None:
    """decode_step_ms is for `batch` sequences holding `context` tokens each."""
    assert main(["--batch", "8", "--context", "1000", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decode_step_ms"] == pytest.approx(load_perf_model().decode_step_ms(8, 8000.0), abs=1e-3)


def test_json_to_file_and_profile_export(tmp_path: Path) -> None:
    """--json PATH writes the figures and --export-profile writes a profile."""
    out, prof = tmp_path / "perf.json", tmp_path / "profile.json"
    assert main([*ARGS, "--json", str(out), "--export-profile", str(prof)]) == 0
    assert "prefill_ms" in json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(prof.read_text(encoding="utf-8"))["format"] == "pdscale-profile/v1"


def test_table_without_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json a human-readable table is printed."""
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    assert "prefill" in out
    assert "max KV tokens" in out


def test_model_that_does_not_fit_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """70B bf16 at TP1 is an error with exit status 2."""
    assert main(["--tp", "1", "--json", "-"]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_profile_csv_needs_memory_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--profile-csv without --kv-bytes-per-token and --max-kv-tokens is an error."""
    assert main(["--profile-csv", str(tmp_path / "x.csv")]) == 2
    assert "--kv-bytes-per-token" in capsys.readouterr().err


def test_add_parser_registers_perf() -> None:
    """add_parser wires a `perf` subcommand whose handler is run."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["perf", "--tp", "8"])
    assert args.tp == 8
    assert callable(args.func)
