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


def _plot(series: list[dict[str, Any]], pools: list[str], path: str, slo: Any) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t = [row["t"] / 60.0 for row in series]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    seqs_ax = axes[1].twinx()
    for pool in pools:
        axes[0].step(t, [row[pool]["target"] for row in series], where="post", label=f"{pool} target")
        axes[0].plot(t, [row[pool]["ready"] for row in series], linestyle=":", label=f"{pool} ready")
        decode_like = "decode" in pool
        demand_ax = seqs_ax if decode_like else axes[1]
        unit = "concurrent seqs, right axis" if decode_like else "prompt tok/s"
        demand_ax.plot(
            t,
            [row[pool]["demand"] for row in series],
            label=f"{pool} demand ({unit})",
            color="tab:orange" if decode_like else "tab:blue",
        )
        axes[2].plot(t, [row[pool]["latency_ms"] for row in series], label=f"{pool} p99 ms")
    seqs_ax.set_ylabel("concurrent sequences")
    seqs_ax.legend(loc="upper right", fontsize=7)
    axes[2].axhline(slo.ttft_ms, color="grey", linestyle="--", linewidth=0.8, label="TTFT SLO")
    axes[2].axhline(slo.itl_ms, color="black", linestyle="--", linewidth=0.8, label="ITL SLO")
    axes[2].set_yscale("log")
    for ax, label in zip(axes, ("replicas", "prompt tokens/s", "observed p99 (ms)"), strict=True):
        ax.set_ylabel(label)
        ax.legend(loc="upper left", fontsize=7)
        ax.grid(alpha=0.3)
    axes[2].set_xlabel("simulated minutes")
    fig.suptitle("pdscale demo: pools sized against the SLO")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 on success, 1 on a settings or start-up error."""
    import asyncio  # noqa: PLC0415
    import contextlib  # noqa: PLC0415
    import time  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from pdscale.controller.cli.main import write_json  # noqa: PLC0415
    from pdscale.controller.core.types import DataState, PoolRole  # noqa: PLC0415
    from pdscale.controller.daemon import Daemon  # noqa: PLC0415
    from pdscale.controller.runtime.loop import TickResult  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginError  # noqa: PLC0415
    from pdscale.controller.runtime.settings import SettingsError  # noqa: PLC0415
    from pdscale.controller.runtime.store import StoreError  # noqa: PLC0415

    if not (args.duration > 0 and (args.speedup is None or args.speedup > 0)):
        sys.stderr.write("pdscale demo: --duration and --speedup must be > 0\n")
        return 2
    console = Console(stderr=True)
    series: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pdscale-demo-") as tmp:
        try:
            settings = _settings(args, tmp)
            max_ticks = max(1, math.ceil(args.duration / settings.tick_s))

            def on_tick(result: TickResult) -> None:
                row: dict[str, Any] = {"t": result.now_s}
                for name, spec in daemon.rec.pools.items():
                    obs, st = result.observations[name], result.states[name]
                    s = obs.signals if obs.state is DataState.OK else None
                    decode = spec.role is PoolRole.DECODE
                    demand = (s.running_requests if decode else s.prompt_tokens_per_s) if s else None
                    latency = (s.itl_p99_ms if decode else s.ttft_p99_ms) if s else None
                    row[name] = {
                        "target": result.decision.pools[name].target,
                        "ready": st.ready,
                        "demand": math.nan if demand is None else demand,
                        "latency_ms": math.nan if latency is None else latency,
                    }
                series.append(row)

            daemon = Daemon(settings, max_ticks=max_ticks, on_tick=on_tick)
        except (SettingsError, PluginError, StoreError, ValueError) as exc:
            sys.stderr.write(f"pdscale demo: {exc}\n")
            return 1
        if daemon.cluster is None:
            sys.stderr.write("pdscale demo: the settings must use the simulator actuator and metrics source\n")
            return 1
        wall = max_ticks * (daemon.wall_per_tick_s or 0.0)
        console.print(
            f"[bold]pdscale demo[/]: {args.duration / 60:.0f} simulated minutes at {settings.simulator.speedup:g}x "
            f"(~{wall:.0f} s). Admin API on {settings.admin.listen}: try `pdscale admin --address "
            f"{settings.admin.listen} status` in another terminal."
        )
        started = time.monotonic()
        try:
            rc = asyncio.run(daemon.run())
        except (SettingsError, ValueError) as exc:
            sys.stderr.write(f"pdscale demo: {exc}\n")
            return 1
        with daemon.env.resources.get("simulator_lock") or contextlib.nullcontext():
            result = daemon.cluster.finish().to_json()
    summary = {
        "ticks": daemon.telemetry.ticks,
        "controlled_s": daemon.telemetry.ticks * settings.tick_s,
        "wall_s": round(time.monotonic() - started, 1),
        "policy": daemon.controls.policy_name,
        **{k: result.get(k) for k in ("requests", "completed", "dropped", "slo_attainment", "ttft_p99_ms",
                                       "itl_p99_ms", "gpu_hours", "prefill_gpu_hours", "decode_gpu_hours",
                                       "scale_actions")},
    }  # fmt: skip
    table = Table("metric", "value", title="pdscale demo summary")
    for k, v in summary.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    Console().print(table)
    Console().print(
        "Requests arriving after the controlled window run on the last targets (the simulator finishes the trace)."
    )
    if args.plot and series:
        _plot(series, list(daemon.rec.pools), args.plot, daemon.rec.slo)
        Console().print(f"plot written to {args.plot}")
    if args.json:
        write_json(summary, args.json)
    return rc
