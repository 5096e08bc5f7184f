"""``pdscale simulate``: replay a trace, a scenario or a settings file through the cluster simulator.

    pdscale simulate --trace data.csv --prefill 2 --decode 4 [--mode colocated --replicas 6]
    pdscale simulate --scenario chat-hour [--policy slo] [--quick] [--json out.json] [--plot out.png]
    pdscale simulate --config my-settings.yaml [--policy slo] [--mode colocated]

``--scenario`` takes the same scenario files as ``pdscale bench`` (a bundled name or a path) and runs one policy
exactly as its bench cell does. ``--config`` takes a pdscale settings file (the daemon's) and replays its
``simulator`` section with its policy, forecasters and guards on a manual clock. With ``--trace`` alone the
pools keep the sizes given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def _replicas(text: str) -> int:
    """A replica count flag: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of replicas, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``simulate``."""
    p = subparsers.add_parser("simulate", help="replay a trace, scenario or settings file through the simulator")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="trace file (csv/jsonl) or bundled:<name>; static pool sizes")
    src.add_argument("--scenario", help="bench scenario: a bundled name (pdscale bench lists them) or a YAML path")
    src.add_argument("--config", help="pdscale settings YAML; its policy resizes the simulated pools")
    p.add_argument("--policy", help="policy plugin (default: slo with --scenario, the file's with --config)")
    p.add_argument("--quick", action="store_true", help="with --scenario: its short quick window")
    p.add_argument("--mode", choices=["disagg", "colocated"], help="serving mode (--trace, --config)")
    p.add_argument("--prefill", type=_replicas, default=2, help="prefill replicas with --trace (default 2)")
    p.add_argument("--decode", type=_replicas, default=2, help="decode replicas with --trace (default 2)")
    p.add_argument("--replicas", type=_replicas, default=4, help="colocated replicas with --trace (default 4)")
    p.add_argument("--model", default="llama-3.1-70b", help="model of the performance model with --trace")
    p.add_argument("--tp", type=int, default=4, help="tensor-parallel GPUs per replica with --trace (default 4)")
    p.add_argument("--slo-ttft-ms", type=float, default=1000.0, help="TTFT target with --trace (default 1000)")
    p.add_argument("--slo-itl-ms", type=float, default=50.0, help="mean ITL target with --trace (default 50)")
    p.add_argument("--json", dest="json_out", help="write the summary as JSON here ('-': stdout)")
    p.add_argument("--plot", help="write a PNG of demand, replicas, latency vs SLO and utilisation")


def run(args: argparse.Namespace) -> int:
    """Run the simulation; 0 on success, 2 on bad input."""
    from pdscale.controller.cli.main import write_json  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginError  # noqa: PLC0415
    from pdscale.controller.runtime.settings import SettingsError  # noqa: PLC0415

    if args.quick and not args.scenario:
        sys.stderr.write("pdscale simulate: --quick applies to --scenario (a scenario's quick window)\n")
        return 2
    try:
        if args.scenario:
            summary, result = _run_scenario(args)
        elif args.config:
            summary, result = _run_config(args)
        else:
            summary, result = _run_trace(args)
    except (ValueError, OSError, PluginError, SettingsError) as exc:
        sys.stderr.write(f"pdscale simulate: {exc}\n")
        return 2
    if summary.get("requests") and summary.get("completed") == 0:
        sys.stderr.write(
            f"pdscale simulate: warning: none of {summary['requests']} requests completed "
            f"(dropped: {summary.get('drop_reasons') or {}}); a pool with 0 replicas serves nothing\n"
        )
    if args.json_out:
        write_json(summary, args.json_out)
    if args.json_out != "-":
        sys.stdout.write(_summary_text(summary))
    if args.plot:
        _plot(result, args.plot)
        if args.json_out != "-":
            sys.stdout.write(f"plot written to  {Path(args.plot).resolve()}\n")
    return 0


def _summary_text(s: dict[str, Any]) -> str:
    """The human summary: counts, attainment against the targets, latencies and cost, with units."""

    def ms(v: Any) -> str:
        return "-" if v is None else f"{float(v):,.1f} ms"

    att = s.get("slo_attainment")
    feasible = s.get("slo_attainment_feasible")
    lines = [
        f"requests         {s['requests']:,} ({s['completed']:,} completed, {s['dropped']:,} dropped)",
        f"SLO attainment   {'-' if att is None else f'{100 * att:.2f}%'} "
        f"(TTFT <= {s['ttft_slo_ms']:g} ms and mean ITL <= {s['itl_slo_ms']:g} ms)",
    ]
    if s.get("infeasible"):
        lines.append(
            f"                 {'-' if feasible is None else f'{100 * feasible:.2f}%'} of the feasible requests; "
            f"{s['infeasible']:,} no fleet can serve within the SLO"
        )
    lines += [
        f"TTFT p50 / p99   {ms(s.get('ttft_p50_ms'))} / {ms(s.get('ttft_p99_ms'))}",
        f"ITL p50 / p99    {ms(s.get('itl_p50_ms'))} / {ms(s.get('itl_p99_ms'))} (per-request mean)",
        f"GPU-hours        {s['gpu_hours']:,.1f}",
    ]
    return "\n".join(lines) + "\n"


def _run_trace(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from pdscale.simulator import Cluster, ClusterConfig, Mode  # noqa: PLC0415
    from pdscale.simulator.perf import load_perf_model  # noqa: PLC0415
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
    return result.to_json(), result


def _scenario(spec: str) -> Any:
    """The bench scenario ``spec`` names; a settings file passed here is told to use ``--config``."""
    from pathlib import Path  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    from pdscale.controller.lab.scenario import ScenarioError, resolve_scenarios  # noqa: PLC0415

    try:
        found = resolve_scenarios(spec)
    except ScenarioError:
        path = Path(spec)
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                data = None
            if isinstance(data, dict) and "pools" in data and "traffic" not in data:
                hint = "this is a pdscale settings file, not a scenario; pass it with --config"
                raise ValueError(f"{spec}: {hint}") from None
        raise
    if len(found) != 1:
        raise ValueError(f"--scenario takes one scenario, got {spec!r} ({len(found)} scenarios)")
    return found[0]


def _progress(end_s: float) -> Any:
    from rich.progress import Progress  # noqa: PLC0415

    return Progress(transient=True, disable=end_s < 3600 or not sys.stderr.isatty())


def _run_scenario(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from pdscale.controller.lab.bench import simulate_scenario  # noqa: PLC0415

    scenario = _scenario(args.scenario)
    if args.quick:
        scenario = scenario.quick()
    if args.mode:
        raise ValueError("--mode applies to --trace and --config; a scenario sets its own serving mode")
    policy = args.policy or "slo"
    with _progress(scenario.traffic.duration_s) as progress:
        task = progress.add_task("simulating", total=scenario.traffic.duration_s)
        result = simulate_scenario(scenario, policy, on_tick=lambda t, _c: progress.update(task, completed=t))
    summary = result.to_json()
    summary.update(policy=policy, scenario=scenario.name)
    return summary, result


def _run_config(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    from pdscale.actuators.simulator import SimulatorActuator  # noqa: PLC0415
    from pdscale.controller.runtime.assembly import build  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginEnv  # noqa: PLC0415
    from pdscale.controller.runtime.replay import build_cluster, replay  # noqa: PLC0415
    from pdscale.controller.runtime.settings import load_settings  # noqa: PLC0415
    from pdscale.controller.sources.simulator import SimulatorMetricsSource  # noqa: PLC0415

    settings = load_settings(args.config)
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
    with _progress(end) as progress:
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
