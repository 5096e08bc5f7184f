"""Wrong inputs to each subcommand: exit code 1 or 2 and one or two lines naming the problem, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdscale.controller.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "simulator.yaml")


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(argv, text the error must contain) for inputs a new operator gets wrong."""
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("name: x\nbogus: [\n")
    missing = str(tmp / "missing.csv")
    return [
        (["simulate", "--config", EXAMPLE, "--policy", "bogus"], "unknown policy 'bogus'"),
        (["simulate", "--scenario", str(bad_yaml), "--quick"], "bad.yaml:3"),
        (["simulate", "--trace", missing], "missing.csv: no such trace file"),
        (["plan", "--trace", missing, "--slo-ttft-ms", "1000", "--slo-itl-ms", "50", "--out", str(tmp / "p")],
         "missing.csv: no such trace file"),
        (["check-config", str(tmp / "missing.yaml")], "missing.yaml: cannot read settings file"),
        (["demo", "--config", str(tmp / "missing.yaml")], "missing.yaml: cannot read settings file"),
        (["bench", "--scenarios", "bogus", "--policies", "slo"], "unknown scenario 'bogus'"),
    ]  # fmt: skip


@pytest.mark.parametrize("k", range(7))
def test_wrong_input_is_one_line_naming_it(k: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The error names the bad input in at most two lines and prints no traceback."""
    argv, expected = _cases(tmp_path)[k]
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert "Traceback" not in err
    assert len(err.splitlines()) <= 2, err
