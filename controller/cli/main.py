"""``pdscale`` command line. Each command lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``; heavy imports happen inside ``run`` so ``pdscale --help`` stays fast."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["COMMANDS", "main", "write_json"]

# (command, module providing add_parser/run, help shown when the module is not available)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("simulate", "pdscale.controller.cli.simulate", "replay a trace or scenario through the cluster simulator"),
    ("perf", "pdscale.simulator.perf_cli", "print the H100 performance model's view of a model and shape"),
    ("forecast", "pdscale.forecasting.cli", "backtest forecasters on a series or trace"),
    ("serve", "pdscale.controller.cli.serve", "run the daemon: control loop, admin API, /metrics"),
    ("demo", "pdscale.controller.cli.demo", "the daemon against the embedded simulator at an accelerated clock"),
    ("admin", "pdscale.controller.cli.admin", "talk to a running daemon's admin API"),
    ("bench", "pdscale.controller.cli.bench", "run every policy on every scenario and compare with the oracle"),
    ("plan", "pdscale.controller.cli.plan", "capacity planning on your traffic: GPUs, split, disaggregation savings"),
)


_LOG_LEVELS = ("debug", "info", "warning", "error")
_LOG_FORMATS = ("auto", "json", "console")


def write_json(data: Any, path: str) -> None:
    """Write ``data`` as JSON to ``path`` (``-``: stdout) with stable key order."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)


def _not_built(name: str, why: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        sys.stderr.write(f"pdscale {name}: not available in this build ({why})\n")
        return 2

    return run


def _add_command(sub: Any, name: str, module: str, help_text: str) -> None:
    try:
        mod = importlib.import_module(module)
        add = mod.add_parser
        run = mod.run
    except (ImportError, AttributeError) as exc:
        p = sub.add_parser(name, help=f"{help_text} [not built yet]", description=f"{help_text} (not built yet)")
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(_run=_not_built(name, f"{type(exc).__name__}: {exc}"))
        return
    before = set(sub.choices)
    add(sub)
    for new in set(sub.choices) - before:
        sub.choices[new].set_defaults(_run=run)


def _plugins_run(args: argparse.Namespace) -> int:
    from pdscale.controller.runtime.plugins import PluginGroup, Registry  # noqa: PLC0415

    reg = Registry()
    rows = {g.value: [{"name": n, "target": t, "distribution": d} for n, t, d in reg.describe(g)] for g in PluginGroup}
    if args.json:
        write_json(rows, args.json)
        return 0
    for group, items in rows.items():
        print(group)
        for item in items:
            print(f"  {item['name']:<16} {item['target']}  ({item['distribution']})")
    return 0


def _check_config_run(args: argparse.Namespace) -> int:
    from pdscale.controller.runtime.assembly import validate_plugins  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginError  # noqa: PLC0415
    from pdscale.controller.runtime.settings import SettingsError, load_settings  # noqa: PLC0415

    try:
        settings = load_settings(args.config)
        validate_plugins(settings)
    except (SettingsError, PluginError, ValueError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    if args.json:
        write_json(settings.model_dump(mode="json"), args.json)
    else:
        print(f"{args.config}: ok ({len(settings.pools)} pools, policy {settings.policy.name})")
    return 0


def _version() -> str:
    """The installed distribution's version (the package's own when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("pdscale")
    except PackageNotFoundError:
        from pdscale import __version__  # noqa: PLC0415

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="pdscale",
        description="Control plane for disaggregated LLM serving: sizes prefill and decode GPU pools "
        "against TTFT/ITL SLOs under a GPU budget.",
    )
    parser.add_argument("--version", action="version", version=f"pdscale {_version()}")
    parser.add_argument("--log-level", default=None, choices=_LOG_LEVELS)
    parser.add_argument(
        "--log-format", default=None, choices=_LOG_FORMATS, help="auto (default): console on a terminal, else JSON"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        _add_command(sub, name, module, help_text)
    p = sub.add_parser("plugins", help="list registered policies, forecasters, actuators and metrics sources")
    p.add_argument("--json", metavar="PATH", help="write JSON to PATH (- for stdout)")
    p.set_defaults(_run=_plugins_run)
    p = sub.add_parser("check-config", help="validate a settings file and the plugins it names")
    p.add_argument("config", help="YAML settings file")
    p.add_argument("--json", metavar="PATH", help="write the validated settings as JSON")
    p.set_defaults(_run=_check_config_run)
    _global_flags_anywhere(sub)
    return parser


def _global_flags_anywhere(sub: Any) -> None:
    """Accept ``--log-level`` and ``--log-format`` after the subcommand too (``pdscale demo --log-format json``);
    given there, they win over the ones before it."""
    for p in {id(p): p for p in sub.choices.values()}.values():
        for flag, choices in (("--log-level", _LOG_LEVELS), ("--log-format", _LOG_FORMATS)):
            with contextlib.suppress(argparse.ArgumentError):  # the command defines it itself
                p.add_argument(flag, default=argparse.SUPPRESS, choices=choices, help=argparse.SUPPRESS)
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _global_flags_anywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pdscale`` console script."""
    from pdscale.controller.runtime.logconfig import configure_logging  # noqa: PLC0415

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level or "info", args.log_format or "auto")
    rc: int = args._run(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
