"""``pdscale plan``: capacity planning on your traffic.

    pdscale plan --trace requests.csv --model llama-3.1-70b --tp 4 --slo-ttft-ms 1000 --slo-itl-ms 50 \\
        --gpu-hour-usd 2.5 --out plan/ [--json plan.json] [--rate-curve day.csv --duration-s 86400]

Finds the smallest static prefill/decode split whose simulated SLO attainment reaches ``--target`` (capacity
model first, then verified and refined in the simulator), the GPU-hours of autoscaling with the slo policy,
the colocated fleet for the same SLO, the savings, and the cases where disaggregation does not pay. Writes
``OUT/report.md`` with PNG plots.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``plan``."""
    p = subparsers.add_parser(
        "plan",
        help="capacity planning on your traffic: GPUs, split, disaggregation savings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", required=True, help="trace file (pdscale CSV/JSONL, Azure, Mooncake) or bundled:<name>")
    p.add_argument("--rate-curve", help="re-synthesize arrivals on this rate curve (CSV or bundled:<name>)")
    p.add_argument("--duration-s", type=float, help="with --rate-curve: seconds to synthesize (default: the trace's)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="with --rate-curve: multiply the curve's rate")
    p.add_argument("--model", default="llama-3.1-70b", help="model of the performance model (default llama-3.1-70b)")
    p.add_argument("--tp", type=int, default=4, help="GPUs per replica (tensor parallel degree, default 4)")
    p.add_argument("--slo-ttft-ms", type=float, required=True, help="time-to-first-token target, ms")
    p.add_argument("--slo-itl-ms", type=float, required=True, help="mean inter-token latency target, ms")
    p.add_argument("--target", type=float, default=0.99, help="share of requests that must meet both (default 0.99)")
    p.add_argument("--gpu-hour-usd", type=float, help="price of one GPU-hour, for the savings in dollars")
    p.add_argument("--prefix-reuse", type=float, help="share of prompt tokens served from a prefix cache (0-1)")
    p.add_argument("--max-replicas", type=int, default=64, help="largest pool the search tries (default 64)")
    p.add_argument("--cold-start-s", type=float, default=300.0, help="replica cold start for the autoscaled replay")
    p.add_argument(
        "--forecaster", default="last_value", help="forecaster of the autoscaled replay (default last_value)"
    )
    p.add_argument("--no-autoscale", action="store_true", help="skip the autoscaled replay (faster)")
    p.add_argument("--out", required=True, help="directory for report.md and plots")
    p.add_argument("--json", dest="json_out", help="write the plan as JSON here ('-': stdout)")


def _load_trace(args: argparse.Namespace) -> Any:
    from pdscale.simulator.traces import bundled_rate_curve, bundled_trace, load_rate_curve, load_trace  # noqa: PLC0415

    name: str = args.trace
    trace = bundled_trace(name.removeprefix("bundled:")) if name.startswith("bundled:") else load_trace(name)
    if args.rate_curve:
        from pdscale.simulator.synth import synthesize  # noqa: PLC0415

        rc: str = args.rate_curve
        curve = bundled_rate_curve(rc.removeprefix("bundled:")) if rc.startswith("bundled:") else load_rate_curve(rc)
        duration = args.duration_s if args.duration_s is not None else float(trace.arrival_s[-1])
        trace = synthesize(curve, trace, duration_s=duration, rate_scale=args.rate_scale, seed=0)
    return trace


def _check(args: argparse.Namespace) -> None:
    for flag, value, ok, what in (
        ("--tp", args.tp, args.tp >= 1, ">= 1"),
        ("--slo-ttft-ms", args.slo_ttft_ms, args.slo_ttft_ms > 0, "> 0"),
        ("--slo-itl-ms", args.slo_itl_ms, args.slo_itl_ms > 0, "> 0"),
        ("--target", args.target, 0 < args.target <= 1, "in (0, 1]"),
        ("--max-replicas", args.max_replicas, args.max_replicas >= 1, ">= 1"),
        ("--rate-scale", args.rate_scale, args.rate_scale > 0, "> 0"),
        ("--cold-start-s", args.cold_start_s, args.cold_start_s >= 0, ">= 0"),
    ):
        if not ok:
            raise ValueError(f"{flag} must be {what}, got {value}")
    if args.prefix_reuse is not None and not 0 <= args.prefix_reuse <= 1:
        raise ValueError(f"--prefix-reuse must be in [0, 1], got {args.prefix_reuse}")
    if args.gpu_hour_usd is not None and args.gpu_hour_usd < 0:
        raise ValueError(f"--gpu-hour-usd must be >= 0, got {args.gpu_hour_usd}")


class _Stages:
    """The planner's stages as "stage k/N" with elapsed time on stderr (rich) in a terminal, else one line each."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        self.bar = Progress(
            TextColumn("pdscale plan: {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=quiet or not sys.stderr.isatty(),
        )
        self.task = self.bar.add_task("starting", total=total)
        self.seen = 0

    def __enter__(self) -> _Stages:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, msg: str) -> None:
        if self.bar.disable:
            sys.stderr.write(f"pdscale plan: {msg}\n")
            return
        self.bar.update(self.task, description=msg, completed=self.seen)
        self.seen += 1


def run(args: argparse.Namespace) -> int:
    """Plan; 0 on success, 2 on bad input."""
    from pdscale.controller.cli.main import write_json  # noqa: PLC0415
    from pdscale.controller.core.types import SLO  # noqa: PLC0415
    from pdscale.controller.lab.bench_run import RunSpec, hardware_perf  # noqa: PLC0415
    from pdscale.controller.lab.planner import make_plan  # noqa: PLC0415
    from pdscale.controller.lab.report import write_plan_report  # noqa: PLC0415
    from pdscale.simulator.feasibility import feasibility  # noqa: PLC0415

    if getattr(args, "log_level", None) is None:  # per-tick decisions would drown the table: warnings only
        import logging  # noqa: PLC0415

        import structlog  # noqa: PLC0415

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        _check(args)
        trace = _load_trace(args)
        spec = RunSpec(
            model=args.model,
            tp=args.tp,
            slo=SLO(ttft_ms=args.slo_ttft_ms, itl_ms=args.slo_itl_ms, quantile=0.99),
            cold_start_s=args.cold_start_s,
            max_replicas=args.max_replicas,
            forecaster=args.forecaster,
        )
        found = feasibility(hardware_perf(spec), trace, spec.slo.ttft_ms, spec.slo.itl_ms)
        if found.infeasible:  # said up front: no split fixes these, and the plan does not buy GPUs for them
            sys.stderr.write(
                f"pdscale plan: {found.summary(spec.slo.ttft_ms, spec.slo.itl_ms)}; "
                "the plan sizes for the feasible requests\n"
            )
        with _Stages(2 if args.no_autoscale else 3, quiet=args.json_out == "-") as stages:
            plan = make_plan(
                trace,
                spec,
                attainment_target=args.target,
                gpu_hour_usd=args.gpu_hour_usd,
                prefix_reuse=args.prefix_reuse,
                autoscale=not args.no_autoscale,
                progress=stages,
            )
        report = write_plan_report(plan, args.out)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"pdscale plan: {exc}\n")
        return 2
    data = plan.to_json()
    if args.json_out:
        write_json(data, args.json_out)
    if args.json_out != "-":
        st, co = data["static_split"], data["colocated"]
        sys.stdout.write(
            f"static split   {st['sizes']['prefill']} prefill + {st['sizes']['decode']} decode = {st['gpus']} GPUs "
            f"(attainment {100 * st['attainment']:.2f}%{'' if st['met'] else ', target not met'})\n"
            f"colocated      {co['sizes']['colocated']} replicas = {co['gpus']} GPUs "
            f"(attainment {100 * co['attainment']:.2f}%{'' if co['met'] else ', target not met'})\n"
        )
        if data["autoscaled"] is not None:
            a = data["autoscaled"]
            sys.stdout.write(
                f"autoscaled     {a['gpu_hours']:.1f} GPU-hours (attainment {100 * (a['slo_attainment'] or 0):.2f}%)\n"
            )
        sys.stdout.write(f"disaggregation pays: {'yes' if data['disaggregation_pays'] else 'no'}\n")
        for f in data["flags"]:
            sys.stdout.write(f"flag {f['code']}: {f['message']}\n")
        sys.stdout.write(f"report: {report}\n")
    return 0
