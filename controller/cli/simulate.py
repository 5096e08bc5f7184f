"""``pdscale simulate``: replay a trace or a scenario (a settings file) through the cluster simulator.

    pdscale simulate --trace data.csv --prefill 2 --decode 4 [--mode colocated --replicas 6]
    pdscale simulate --scenario examples/simulator.yaml [--policy slo] [--json out.json] [--plot out.png]

With ``--scenario`` the control loop (the scenario's policy, forecasters, guards) resizes the pools every
``tick_s`` on a manual clock; with ``--trace`` alone the pools keep the sizes given.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``simulate``."""
    p = subparsers.add_parser("simulate", help="replay a trace or scenario through the cluster simulator")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="trace file (csv/jsonl) or bundled:<name>; static pool sizes")
    src.add_argument("--scenario", help="pdscale settings YAML; its policy resizes the simulated pools")
    p.add_argument("--policy", help="override the scenario's policy plugin name")
    p.add_argument("--mode", choices=["disagg", "colocated"], help="serving mode (default: scenario's, or disagg)")
    p.add_argument("--prefill", type=int, default=2, help="prefill replicas with --trace (default 2)")
    p.add_argument("--decode", type=int, default=2, help="decode replicas with --trace (default 2)")
    p.add_argument("--replicas", type=int, default=4, help="colocated replicas with --trace (default 4)")
    p.add_argument("--model", default="llama-3.1-70b", help="model of the performance model with --trace")
    p.add_argument("--tp", type=int, default=4, help="tensor-parallel GPUs per replica with --trace (default 4)")
    p.add_argument("--slo-ttft-ms", type=float, default=1000.0, help="TTFT target with --trace (default 1000)")
    p.add_argument("--slo-itl-ms", type=float, default=50.0, help="mean ITL target with --trace (default 50)")
    p.add_argument("--json", dest="json_out", help="write the summary as JSON here ('-': stdout)")
    p.add_argument("--plot", help="write a PNG of demand, replicas, latency vs SLO and utilisation")


def run(args: argparse.Namespace) -> int:
    """Run the simulation; 0 on success, 2 on bad input."""
    from pdscale.controller.cli.main import write_json  # noqa: PLC0415
    from pdscale.simulator import Cluster, ClusterConfig, Mode  # noqa: PLC0415
    from pdscale.simulator.perf import load_perf_model  # noqa: PLC0415

    try:
        if args.scenario:
            summary, result = _run_scenario(args)
        else:
            from pdscale.simulator.traces import bundled_trace, load_trace  # noqa: PLC0415

            name: str = args.trace
            trace = bundled_trace(name.removeprefix("bundled:")) if name.startswith("bundled:") else load_trace(name)
            mode = Mode(args.mode or "disagg")
            perf = load_perf_model(args.model, args.tp)
            slo = {"ttft_slo_ms": args.slo_ttft_ms, "itl_slo_ms": args.slo_itl_ms}
            if mode is Mode.DISAGG:
                cfg = ClusterConfig(perf=perf, prefill_replicas=args.prefill, decode_replicas=args.decode, **slo)
            else:
                cfg = ClusterConfig(perf=perf, mode=mode, colocated_replicas=args.replicas, **slo)
            result = Cluster(cfg, trace).finish()
            summary = result.to_json()
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"pdscale simulate: {exc}\n")
        return 2
    if args.json_out:
        write_json(summary, args.json_out)
    if args.json_out != "-":
        for key in ("requests", "completed", "dropped", "slo_attainment", "ttft_p99_ms", "itl_p99_ms", "gpu_hours"):
            sys.stdout.write(f"{key:16} {summary[key]}\n")
    if args.plot:
        _plot(result, args.plot)
    return 0


def _run_scenario(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from rich.progress import Progress  # noqa: PLC0415

    from pdscale.actuators.simulator import SimulatorActuator  # noqa: PLC0415
    from pdscale.controller.runtime.assembly import build  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginEnv  # noqa: PLC0415
    from pdscale.controller.runtime.replay import build_cluster, replay  # noqa: PLC0415
    from pdscale.controller.runtime.settings import load_settings  # noqa: PLC0415
    from pdscale.controller.sources.simulator import SimulatorMetricsSource  # noqa: PLC0415

    settings = load_settings(args.scenario)
    updates: dict[str, Any] = {}
    if args.policy:
        updates["policy"] = settings.policy.model_copy(update={"name": args.policy, "params": {}})
    if args.mode:
        updates["simulator"] = settings.simulator.model_copy(update={"mode": args.mode})
    settings = settings.model_copy(update=updates)
    cluster = build_cluster(settings)
    pools = {p.name: p for p in settings.pools}
    env = PluginEnv(resources={"simulator": cluster})
    assembly = build(
        settings,
        env=env,
        source=SimulatorMetricsSource(pools, cluster=cluster),
        actuator=SimulatorActuator(pools, cluster=cluster),
    )
    end = float(cluster.trace.arrival_s[-1]) if len(cluster.trace.arrival_s) else 0.0
    with Progress(transient=True, disable=end < 3600 or not sys.stderr.isatty()) as progress:
        task = progress.add_task("simulating", total=end)
        result = replay(
            assembly.reconciler,
            cluster,
            tick_s=settings.tick_s,
            on_tick=lambda t, _c: progress.update(task, completed=t),
        )
    summary = result.to_json()
    summary["policy"] = settings.policy.name
    return summary, result


def _plot(result: Any, path: str) -> None:
    import matplotlib as mpl  # noqa: PLC0415

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    pools = sorted({s.pool for s in result.samples}, key=lambda p: p.value)
    for pool in pools:
        rows = [s for s in result.samples if s.pool is pool]
        t_h = np.array([s.t_s for s in rows]) / 3600.0
        if pool.value != "decode":
            axes[0].plot(t_h, [s.arrivals_per_s for s in rows], label=f"{pool.value} requests/s")
        axes[1].plot(t_h, [s.ready + s.starting for s in rows], label=f"{pool.value} replicas")
        axes[3].plot(t_h, [s.busy_share for s in rows], label=f"{pool.value} compute-busy share")
        if pool.value != "prefill":
            axes[3].plot(t_h, [s.kv_share for s in rows], "--", label=f"{pool.value} KV share")
    done = ~np.isnan(result.finish_s)
    finish_h = result.finish_s[done] / 3600.0
    axes[2].plot(finish_h, result.ttft_s[done] * 1000.0, ",", alpha=0.3, label="TTFT ms")
    axes[2].plot(finish_h, result.itl_s[done] * 1000.0, ",", alpha=0.3, label="mean ITL ms")
    axes[2].axhline(result.ttft_slo_ms, color="C0", linestyle=":", label="TTFT SLO")
    axes[2].axhline(result.itl_slo_ms, color="C1", linestyle=":", label="ITL SLO")
    axes[2].set_yscale("log")
    for ax, title in zip(axes, ("demand", "replicas per pool", "latency vs SLO", "utilisation"), strict=True):
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("hours")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
