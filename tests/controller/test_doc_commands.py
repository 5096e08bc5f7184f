"""Every ``pdscale ...`` command the docs show parses; the short ones run on small inputs.

A command is taken from fenced blocks (``$ `` prompts and ``\\`` continuations included) and from inline code
spans in docs/*.md and README.md. Synopses (``FILE``, ``...``, ``|``, ``[...]``) and prose naming a subcommand
or one flag must name a real subcommand;
the other commands must parse with the real parser; each one either runs here (RUN, shrunk by extra flags) or
its subcommand has a reason in NOT_RUN. A new documented command without either fails the test.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pdscale.controller.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# Documented command -> flags appended (or replacing) so that it runs in seconds on the bundled inputs.
RUN: dict[str, list[str]] = {
    "pdscale demo": ["--duration", "4", "--admin-listen", "127.0.0.1:0", "--telemetry-listen", "127.0.0.1:0"],
    "pdscale plan --trace bundled:azure-conv --slo-ttft-ms 1000 --slo-itl-ms 50 --gpu-hour-usd 2.5 --out plan/": [
        "--duration-s",
        "60",
        "--no-autoscale",
    ],
    "pdscale demo --speedup 600": [
        "--duration",
        "60",
        "--admin-listen",
        "127.0.0.1:0",
        "--telemetry-listen",
        "127.0.0.1:0",
    ],
    "pdscale plugins": [],
    "pdscale perf": ["--model", "llama-3.1-70b", "--tp", "4"],
}
# Subcommand -> why its documented commands are parsed but not run here (each has its own tests).
NOT_RUN: dict[str, str] = {
    "admin": "needs a running daemon (tests/controller/test_admin_*.py start one)",
    "serve": "runs until stopped against a cluster (tests/controller/test_daemon.py)",
    "bench": "minutes over the scenario grid (tests/controller/test_bench.py runs small grids)",
    "simulate": "named without inputs in prose (tests/controller/test_simulate_cli.py)",
    "plan": "the documented requests.csv is the reader's own trace (the bundled-trace example runs)",
    "check-config": "named with a FILE placeholder (tests/controller/test_cli.py)",
    "forecast": "named with '...' (tests/forecasting/)",
}
_SYNOPSIS = re.compile(r"\.\.\.|\||\[|\b[A-Z][A-Z_:]{2,}\b")


def _commands() -> list[tuple[str, str]]:
    """(doc:line, command) for every documented pdscale command."""
    out: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        name = doc.relative_to(ROOT).as_posix()
        for block in re.finditer(r"```[^\n]*\n(.*?)```", text, re.S):
            line_no = text.count("\n", 0, block.start()) + 2
            cmd = ""
            for k, raw in enumerate(block.group(1).splitlines()):
                line = raw.strip().removeprefix("$ ")
                if not cmd and not line.startswith("pdscale "):
                    continue
                cmd = f"{cmd} {line}".strip() if cmd else line
                if cmd.endswith("\\"):
                    cmd = cmd[:-1].strip()
                    continue
                out.append((f"{name}:{line_no + k}", re.sub(r"\s+", " ", cmd)))
                cmd = ""
        fenced = re.sub(r"```.*?```", "", text, flags=re.S)
        for m in re.finditer(r"`(pdscale [^`]+)`", fenced):
            out.append((name, m.group(1).replace("\\|", "|")))
    return out


COMMANDS = _commands()


def test_docs_show_commands() -> None:
    """The extraction finds the documented commands (a broken regex cannot pass the other tests vacuously)."""
    assert len(COMMANDS) >= 30
    assert any(c.startswith("pdscale plan --trace bundled:") for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "cmd"), COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_documented_command_parses(where: str, cmd: str) -> None:
    """A documented command names a real subcommand and, unless a synopsis, parses with the real parser."""
    argv = shlex.split(cmd.split("#", 1)[0])[1:]
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert argv, f"{where}: `{cmd}` has no subcommand"
    assert argv[0] in subcommands, f"{where}: `{cmd}` names no pdscale subcommand"
    # A synopsis, or prose naming a subcommand (`pdscale serve`) or one of its flags (`pdscale bench --policies`).
    named = cmd not in RUN and (len(argv) == 1 or (len(argv) == 2 and argv[1].startswith("--")))
    if _SYNOPSIS.search(cmd) or named:
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `{cmd}` does not parse: {err.getvalue().strip().splitlines()[-1]}")
    assert cmd in RUN or argv[0] in NOT_RUN, f"{where}: `{cmd}` is neither run here (RUN) nor given a reason"


@pytest.mark.parametrize("cmd", sorted(RUN))
def test_documented_command_runs(cmd: str, tmp_path: Path) -> None:
    """The documented command, shrunk by a few flags, exits 0 on the bundled inputs."""
    assert cmd in {c for _, c in COMMANDS}, f"`{cmd}` is no longer in the docs: drop it from RUN"
    argv = [*shlex.split(cmd)[1:], *RUN[cmd]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pdscale.controller.cli.main", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}: {proc.stderr[-800:]}"
