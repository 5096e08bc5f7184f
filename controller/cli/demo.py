"""``pdscale demo``: the daemon against the embedded simulator at an accelerated clock.

Replays the bundled trace (settings: the bundled ``demo.yaml``, also at examples/simulator.yaml) through the
simulated H100 cluster with the admin API live (try ``pdscale admin status`` in another terminal), then prints a
summary and writes a plot.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "bundled" / "demo.yaml"


def add_parser(subparsers: Any) -> None:
    """Register ``demo``."""
    p = subparsers.add_parser(
        "demo",
        help="the daemon against the embedded simulator at an accelerated clock",
        description="Run pdscale against a simulated H100 cluster replaying a trace, with the admin API live; "
        "ends with a summary and a plot. Defaults finish in about a minute.",
    )
    p.add_argument("--config", default=None, metavar="FILE", help=f"settings file (default: {DEFAULT_CONFIG.name})")
    p.add_argument("--duration", type=float, default=3600.0, metavar="S", help="simulated seconds (default: 3600)")
    p.add_argument("--speedup", type=float, default=None, help="simulated seconds per wall second (default: config)")
    p.add_argument("--admin-listen", default=None, metavar="HOST:PORT", help="override admin.listen")
    p.add_argument("--telemetry-listen", default=None, metavar="HOST:PORT", help="override telemetry.listen")
    p.add_argument("--state", default=None, metavar="PATH", help="SQLite state file (default: a temporary one)")
    p.add_argument("--plot", default="pdscale-demo.png", metavar="PNG", help="plot path ('' for none)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the summary as JSON (- for stdout)")
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the baselines: the best static split and colocated fleet on the same requests (simulated "
        "after the run, ~15 s for the hour)",
    )


def _settings(args: argparse.Namespace, state_dir: str) -> Any:
    from pdscale.controller.cli.serve import apply_overrides  # noqa: PLC0415
    from pdscale.controller.runtime.settings import load_settings  # noqa: PLC0415

    path = Path(args.config) if args.config else DEFAULT_CONFIG
    settings = load_settings(path)
    if args.state is None:
        args.state = str(Path(state_dir) / "demo-state.db")
    settings = apply_overrides(settings, args)
    if args.speedup is not None:
        settings = settings.model_copy(
            update={"simulator": settings.simulator.model_copy(update={"speedup": args.speedup})}
        )
    return settings


def _tick_row(daemon: Any, result: Any) -> dict[str, Any]:
    from pdscale.controller.core.types import DataState, PoolRole  # noqa: PLC0415

    row: dict[str, Any] = {"t": result.now_s}
    for name, spec in daemon.rec.pools.items():
        obs, st = result.observations[name], result.states[name]
        s = obs.signals if obs.state is DataState.OK else None
        demand = (s.running_requests if spec.role is PoolRole.DECODE else s.prompt_tokens_per_s) if s else None
        row[name] = {"target": result.decision.pools[name].target, "ready": st.ready, "demand": demand}
    return row


def _log_tick(row: dict[str, Any], roles: dict[str, str]) -> None:
    import structlog  # noqa: PLC0415

    t = int(row["t"])
    fields: dict[str, Any] = {"sim": f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}"}
    for name, role in roles.items():
        p = row[name]
        fields[name] = p["target"]
        fields[f"{name}_ready"] = p["ready"]
        if p["demand"] is not None:
            fields["seqs" if role == "decode" else "prompt_tok_s"] = round(p["demand"])
    structlog.get_logger("pdscale.demo").info("demo_tick", **fields)


async def _serve(daemon: Any, console: Any, args: argparse.Namespace, wall_s: float) -> int:
    """Run the daemon; once its admin API is up, say where (the real port) and how to talk to it."""
    import asyncio  # noqa: PLC0415

    running = asyncio.ensure_future(daemon.run())
    started = asyncio.ensure_future(daemon.started.wait())
    await asyncio.wait({running, started}, return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        started.cancel()
    elif daemon.admin is not None:
        s = daemon.settings
        console.print(
            f"[bold]pdscale demo[/]: {args.duration / 60:g} simulated minutes at {s.simulator.speedup:g}x "
            f"(~{wall_s:.0f} s), policy {daemon.controls.policy_name}; Ctrl-C ends it early with the summary.\n"
            f"[bold]Admin API on {daemon.admin.address}[/]: in another terminal try "
            f"[bold]pdscale admin --address {daemon.admin.address} status[/] (or decisions, explain, pause)",
            highlight=False,
            soft_wrap=True,  # the command stays on one line, ready to copy
        )
    rc: int = await running
    return rc


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.2f}%"


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):,.1f} ms"


def _print_story(story: dict[str, Any], ticks: int, wall_s: float) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    out = Console(highlight=False, soft_wrap=True)
    slo, run = story["slo"], story["run"]
    out.print(
        f"[bold]SLO[/]: TTFT p99 <= {slo['ttft_p99_ms']:g} ms and ITL p99 <= {slo['itl_p99_ms']:g} ms (per-request "
        f"mean); target: {100 * slo['attainment_target']:g}% of requests meet both"
    )
    out.print(
        f"Window: the {story['window_s'] / 60:g} controlled minutes ({ticks} ticks, {wall_s:.0f} s wall): "
        f"{run['requests']:,} requests arrived, each run to completion; later ones are not counted."
    )
    base = story["baseline"]
    table = Table(title="pdscale demo summary", title_justify="left")
    table.add_column("")
    table.add_column("this run: autoscaled", justify="right")
    cols = [run]
    if "skipped" not in base:
        split = "+".join(f"{n}{role[0].upper()}" for role, n in base["sizes"].items())
        table.add_column(f"best static {split}", justify="right")
        cols.append(base)
    col = story.get("colocated")
    if col is not None:
        table.add_column(f"best colocated x{col['sizes'].get('colocated', 0)}", justify="right")
        cols.append(col)
    rows = (
        ("SLO attainment", "slo_attainment", _pct),
        ("TTFT p99", "ttft_p99_ms", _ms),
        ("ITL p99", "itl_p99_ms", _ms),
        ("GPU-hours", "gpu_hours", lambda v: f"{float(v):,.2f}"),
        ("  prefill/decode", None, None),
        ("completed/dropped", None, None),
        ("scale actions", "scale_actions", str),
    )
    for label, key, fmt in rows:
        cells = []
        for src in cols:
            if key is None and label.startswith("  prefill") and src.get("colocated_gpu_hours"):
                cells.append("(one pool)")
            elif key is None and label.startswith("  prefill"):
                cells.append(f"{src['prefill_gpu_hours']:,.2f} / {src['decode_gpu_hours']:,.2f}")
            elif key is None:
                cells.append(f"{src['completed']:,} / {src['dropped']:,}")
            else:
                assert fmt is not None
                cells.append(fmt(src.get(key)))
        table.add_row(label, *cells)
    out.print(table)
    for b in (base, col):
        if b is not None and "skipped" not in b:
            out.print(f"{b['kind'].capitalize()}: {b['source']} ({b['wall_s']:g} s).")
    out.print("P: prefill replicas, D: decode replicas; baselines picked in hindsight, knowing the whole window.")
    out.print(f"[bold]Verdict[/]: {story['verdict']}.")


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 on success, 1 on a settings or start-up error."""
    import asyncio  # noqa: PLC0415
    import contextlib  # noqa: PLC0415
    import time  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from pdscale.controller.cli.main import write_json  # noqa: PLC0415
    from pdscale.controller.daemon import Daemon  # noqa: PLC0415
    from pdscale.controller.lab.demo_plot import plot_demo  # noqa: PLC0415
    from pdscale.controller.lab.demo_story import (  # noqa: PLC0415
        best_static_split,
        close_window,
        demo_story,
        window_latency,
    )
    from pdscale.controller.runtime.logconfig import configure_logging, uses_json  # noqa: PLC0415
    from pdscale.controller.runtime.loop import TickResult  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginError  # noqa: PLC0415
    from pdscale.controller.runtime.settings import SettingsError  # noqa: PLC0415
    from pdscale.controller.runtime.store import StoreError  # noqa: PLC0415

    if not (args.duration > 0 and (args.speedup is None or args.speedup > 0)):
        sys.stderr.write("pdscale demo: --duration and --speedup must be > 0\n")
        return 2
    log_format = getattr(args, "log_format", None) or "auto"
    console_logs = not uses_json(log_format)
    configure_logging(getattr(args, "log_level", None) or "info", log_format, compact=True)
    console = Console(stderr=True)
    series: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pdscale-demo-") as tmp:
        try:
            settings = _settings(args, tmp)
            max_ticks = max(1, math.ceil(args.duration / settings.tick_s))

            def on_tick(result: TickResult) -> None:
                series.append(_tick_row(daemon, result))
                if console_logs:
                    _log_tick(series[-1], roles)

            daemon = Daemon(settings, max_ticks=max_ticks, on_tick=on_tick)
            roles = {name: spec.role.value for name, spec in daemon.rec.pools.items()}
        except (SettingsError, PluginError, StoreError, ValueError) as exc:
            sys.stderr.write(f"pdscale demo: {exc}\n")
            return 1
        if daemon.cluster is None:
            sys.stderr.write("pdscale demo: the settings must use the simulator actuator and metrics source\n")
            return 1
        wall = max_ticks * (daemon.wall_per_tick_s or 0.0)
        started = time.monotonic()
        try:
            rc = asyncio.run(_serve(daemon, console, args, wall))
        except (SettingsError, ValueError) as exc:
            sys.stderr.write(f"pdscale demo: {exc}\n")
            return 1
        ticks = daemon.telemetry.ticks
        wall_s = time.monotonic() - started
        with daemon.env.resources.get("simulator_lock") or contextlib.nullcontext():
            window = close_window(daemon.cluster, ticks * settings.tick_s)
    colocated = None
    if args.baseline:
        with console.status("baseline: searching the best static split on the same requests"):
            baseline = best_static_split(settings, window.trace)
        if not baseline.skipped:
            with console.status("baseline: searching the best colocated fleet on the same requests"):
                colocated = best_static_split(settings, window.trace, colocated=True)
    else:
        from pdscale.controller.lab.demo_story import Baseline  # noqa: PLC0415

        baseline = Baseline({}, 0, False, 0, 0.0, {}, skipped="--no-baseline")
    story = demo_story(settings, window, baseline, colocated)
    story.update(ticks=ticks, wall_s=round(wall_s, 1), policy=daemon.controls.policy_name)
    if args.json != "-":
        _print_story(story, ticks, wall_s)
    if args.plot and series:
        plot_demo(series, roles, window_latency(window.result, window.end_s), settings.slo, args.plot)
        where = f"plot written to {Path(args.plot).resolve()}"
        (console if args.json == "-" else Console(highlight=False)).print(where, highlight=False, soft_wrap=True)
    if args.json:
        write_json(story, args.json)
    return rc
