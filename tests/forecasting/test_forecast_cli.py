"""``pdscale forecast backtest`` through pdscale.forecasting.cli."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pdscale.forecasting.cli import main


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
