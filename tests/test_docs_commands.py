"""Every `pdscale ...` command shown in README.md and docs/*.md names a real subcommand and flags argparse accepts.

Each command (fenced lines, with backslash continuations joined, and inline code spans) is parsed by the real
parser, not run: no long work, no daemon. A whole command must parse as written; a mention (`pdscale plan`, or
one elided with ``...``) must name a real subcommand and only flags it has. A few lines are synopses or prose,
listed in EXCEPTIONS with the reason.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from pdscale.controller.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

# Command text -> why it is not parsed as written (each still has its subcommand's --help checked).
EXCEPTIONS = {
    "pdscale admin [--address H:P] [--token T | --token-file F] [--tls-ca CA [--tls-cert C --tls-key K]] "
    "[--json PATH] status | pools | forecast POOL | decisions [--pool P --since S --until S --limit N] | "
    "watch [--pool P] |": "a synopsis: [optional] flags and | alternatives",
    "pdscale admin status\\|pools\\|decisions\\|watch\\|explain\\|pause\\|resume\\|override\\|policy\\|dry-run": (
        "a list of admin subcommands, checked one by one below"
    ),
    "pdscale simulate --trace FILE \\| --scenario NAME \\| --config FILE": "alternatives (each flag is checked)",
    "pdscale bench --policies": "prose naming the flag, without its value",
}


def _commands() -> list[tuple[str, str]]:
    """(where, command) for each fenced line and inline code span that starts with `pdscale `."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        fenced = False
        pending = ""
        where = ""
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            text = line.strip()
            if text.startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                if pending:
                    pending += " " + text.removesuffix("\\").strip()
                    if not text.endswith("\\"):
                        found.append((where, pending))
                        pending = ""
                    continue
                text = text.removeprefix("$ ")
                if text.startswith("pdscale "):
                    where = f"{doc.name}:{number}"
                    if text.endswith("\\"):
                        pending = text.removesuffix("\\").strip()
                    else:
                        found.append((where, text))
                continue
            for span in re.findall(r"`(pdscale [^`]*)`", line):
                found.append((f"{doc.name}:{number}", span))
    return found


COMMANDS = _commands()


def _argv(command: str) -> list[str]:
    """The arguments after `pdscale`, up to an elision (`...`), a pipe or a comment."""
    argv: list[str] = []
    for token in shlex.split(command, comments=True)[1:]:
        if token in ("...", "|", "&&", ">") or token.startswith("..."):
            break
        argv.append(token)
    return argv


def _is_mention(command: str, argv: list[str]) -> bool:
    """A subcommand named in prose (no arguments after it) or a command elided with `...`."""
    return "..." in command or not any(t.startswith("-") for t in argv)


def _scan(parser: argparse.ArgumentParser, rest: list[str]) -> tuple[list[str], int]:
    """Flags ``parser`` does not know, and how many positional words are left once flag values are skipped."""
    unknown: list[str] = []
    positionals = 0
    tokens = iter(rest)
    for token in tokens:
        if not token.startswith("-"):
            positionals += 1
            continue
        action = parser._option_string_actions.get(token.split("=")[0])
        if action is None:
            unknown.append(token)
        elif action.nargs != 0 and "=" not in token:
            next(tokens, None)
    return unknown, positionals


def _subparser(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (nested) subcommand parser ``argv`` selects, and the arguments left after its names."""
    parser: argparse.ArgumentParser = build_parser()
    rest = list(argv)
    while rest:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or rest[0] not in subs[0].choices:
            break
        parser = subs[0].choices[rest.pop(0)]
    return parser, rest


def test_docs_show_commands() -> None:
    """The docs hold pdscale commands to check (the extraction itself works)."""
    assert len(COMMANDS) >= 20
    assert any(c.startswith("pdscale plan --trace") for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where: str, command: str) -> None:
    """The documented command's subcommand exists and argparse accepts its flags as written."""
    if command in EXCEPTIONS:
        pytest.skip(f"{where}: {EXCEPTIONS[command]}")
    argv = _argv(command)
    if _is_mention(command, argv):
        parser, rest = _subparser(argv)
        assert parser.prog != "pdscale", f"{where}: `{command}` names no subcommand"
        unknown, positionals = _scan(parser, rest)
        assert unknown == [], f"{where}: `{command}`: {parser.prog} has no {unknown}"
        room = [a for a in parser._actions if not a.option_strings]
        assert positionals <= len(room) or any(a.nargs in ("*", "+", argparse.REMAINDER) for a in room), (
            f"{where}: `{command}`: {parser.prog} takes {len(room)} positional argument(s), got {positionals}"
        )
        return
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` is refused by the parser (exit {exc.code})")
    assert args.command is not None


def test_exceptions_are_still_in_the_docs() -> None:
    """Each listed exception is still in the docs (a stale entry would hide nothing and mislead)."""
    shown = {c for _, c in COMMANDS}
    assert sorted(set(EXCEPTIONS) - shown) == []


SUBCOMMANDS = sorted({_argv(c)[0] for _, c in COMMANDS if _argv(c)} | {"check-config", "plugins"})
ADMIN = ["status", "pools", "decisions", "watch", "explain", "pause", "resume", "override", "policy", "dry-run"]


@pytest.mark.parametrize("argv", [[s, "--help"] for s in SUBCOMMANDS] + [["admin", a, "--help"] for a in ADMIN])
def test_documented_subcommand_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`pdscale <subcommand> --help` exits 0 with a usage line for every subcommand the docs name."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: pdscale " + " ".join(argv[:-1]))


@pytest.mark.parametrize("flag", ["--trace", "--scenario", "--config"])
def test_simulate_alternatives_exist(flag: str) -> None:
    """Each of simulate's documented input flags is accepted."""
    args = build_parser().parse_args(["simulate", flag, "x"])
    assert args.command == "simulate"
