"""``pdscale forecast backtest`` through pdscale.forecasting.cli."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pdscale.forecasting.cli import main, run_backtests


def _write_series(path: Path, n: int = 120) -> None:
    rng = np.random.default_rng(0)
    rows = ["t_s,value"] + [f"{i * 60},{100 + 10 * np.sin(i / 5) + rng.normal(0, 2):.3f}" for i in range(n)]
    rows[10] = "540,"
    path.write_text("\n".join(rows) + "\n")


class TestCli:
    def test_series_json_shape(self, tmp_path: Path) -> None:
        """The JSON names the default and gives the five metrics per model."""
        src, out = tmp_path / "s.csv", tmp_path / "o.json"
        _write_series(src)
        rc = main(
            [
                "forecast",
                "backtest",
                "--series",
                str(src),
                "--models",
                "last_value,ewma,ensemble",
                "--step-s",
                "60",
                "--horizon-s",
                "300",
                "--json",
                str(out),
            ]
        )
        assert rc == 0
        data = json.loads(out.read_text())
        assert data["default"] == "ensemble"
        assert set(data["models"]) == {"last_value", "ewma", "ensemble"}
        assert set(data["models"]["last_value"]) == {"mase", "smape", "pinball", "p90_coverage", "fit_s"}

    def test_trace_decode_to_stdout(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A trace is turned into the decode signal and the JSON goes to stdout with '-'."""
        src = tmp_path / "t.csv"
        rng = np.random.default_rng(1)
        a = np.sort(rng.uniform(0, 3600, 2000))
        src.write_text(
            "arrival_s,input_tokens,output_tokens\n"
            + "".join(f"{x:.3f},{rng.integers(10, 900)},{rng.integers(5, 300)}\n" for x in a)
        )
        rc = main(
            [
                "forecast",
                "backtest",
                "--trace",
                str(src),
                "--signal",
                "decode_concurrency",
                "--models",
                "last_value,ensemble",
                "--json",
                "-",
            ]
        )
        assert rc == 0
        data = json.loads(capsys.readouterr().out)
        assert data["models"]["last_value"]["mase"] is not None

    def test_bad_row_names_file_and_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A malformed value is reported with file:line and the field, exit code 2."""
        src = tmp_path / "bad.csv"
        src.write_text("arrival_s,input_tokens,output_tokens\n0.0,10,5\n1.0,ten,5\n")
        rc = main(["forecast", "backtest", "--trace", str(src), "--json", "-"])
        assert rc == 2
        assert f"{src}:3: input_tokens='ten'" in capsys.readouterr().err

    def test_unknown_model_is_rejected(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown --models entry is an error listing the known ones."""
        src = tmp_path / "s.csv"
        _write_series(src, 20)
        rc = main(["forecast", "backtest", "--series", str(src), "--models", "prophet", "--json", "-"])
        assert rc == 2
        assert "prophet" in capsys.readouterr().err

    def test_time_going_backwards_is_rejected(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A series whose t_s decreases is rejected at that line."""
        src = tmp_path / "s.csv"
        src.write_text("t_s,value\n0,1\n60,2\n30,3\n")
        assert main(["forecast", "backtest", "--series", str(src), "--json", "-"]) == 2
        assert f"{src}:4: t_s goes backwards" in capsys.readouterr().err


class TestProgressAndTable:
    def test_progress_counts_every_fold_of_every_model(self) -> None:
        """on_progress ends at models x origins folds, counting up, with the model being run named."""
        t = np.arange(100) * 60.0
        calls: list[tuple[str, int, int]] = []
        run_backtests(t, 100 + np.sin(t / 900), models=("last_value", "ewma"), step_s=60.0, horizon_s=300.0,
                      on_progress=lambda name, done, total: calls.append((name, done, total)))  # fmt: skip
        assert calls[-1] == ("ewma", 200, 200)
        assert [d for _, d, _ in calls] == sorted(d for _, d, _ in calls)
        assert calls[0][0] == "last_value"

    def test_progress_shows_on_a_terminal(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With stderr a terminal, the fold progress bar is drawn there."""
        src = tmp_path / "s.csv"
        _write_series(src)
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        out = str(tmp_path / "o.json")
        assert main(["forecast", "backtest", "--series", str(src), "--models", "last_value", "--json", out]) == 0
        assert "backtest folds" in capsys.readouterr().err

    def test_no_progress_with_json_to_stdout(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With --json - nothing but the JSON is written, even on a terminal."""
        src = tmp_path / "s.csv"
        _write_series(src)
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        assert main(["forecast", "backtest", "--series", str(src), "--models", "last_value", "--json", "-"]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        json.loads(captured.out)

    def test_without_json_a_table_is_printed(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --json the scores come as a table naming the default model."""
        src = tmp_path / "s.csv"
        _write_series(src)
        assert main(["forecast", "backtest", "--series", str(src), "--models", "last_value,ewma"]) == 0
        out = capsys.readouterr().out
        assert "MASE" in out
        assert "(default)" in out
