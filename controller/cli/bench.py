"""``pdscale bench``: every policy on every scenario, one table against the hindsight oracle.

    pdscale bench --scenarios all --policies all --json docs/bench.json --plot docs/img --markdown docs/bench-table.md
    pdscale bench --scenarios chat-hour --policies slo,oracle --quick
    pdscale bench --scenarios all --policies all --parallel      # Ray: local, or RAY_ADDRESS

Scenarios are the bundled YAML files (``controller/bundled/scenarios/``) or paths; ``--quick`` replays each
scenario's short ``quick`` window instead of the whole day (a smoke run; not the documented figures).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``bench``."""
    p = subparsers.add_parser(
        "bench",
        help="run every policy on every scenario and compare with the oracle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--scenarios", default="all", help="'all' or a comma list of scenario names or YAML paths")
    p.add_argument(
        "--policies", default="all", help="'all' (every registered policy plugin) or a comma list of their names"
    )
    p.add_argument("--scenario-dir", help="directory of scenario files (default: the bundled ones)")
    p.add_argument("--json", dest="json_out", help="write rows (and timelines) as JSON here ('-': stdout)")
    p.add_argument("--plot", help="directory for PNG plots: a summary and one timeline per run")
    p.add_argument(
        "--markdown", help="write the results table as Markdown here (between the pdscale-bench markers if present)"
    )
    p.add_argument("--parallel", action="store_true", help="fan the runs out over Ray (pip install 'pdscale[ray]')")
    p.add_argument("--quick", action="store_true", help="replay each scenario's short quick window (smoke run)")
    p.add_argument("--no-timelines", action="store_true", help="leave per-interval timelines out of the JSON")


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from pdscale.controller.lab.report import TABLE_COLUMNS, bench_table_rows  # noqa: PLC0415

    table = Table(title="pdscale bench")
    for head, _ in TABLE_COLUMNS:
        table.add_column(head, justify="left" if head in ("scenario", "policy") else "right")
    for row, cells in zip(rows, bench_table_rows(rows), strict=True):
        att = row.get("slo_attainment")
        miss = isinstance(att, (int, float)) and att < float(row.get("attainment_target", 0.99))
        table.add_row(*cells, style="red" if miss else None)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def run(args: argparse.Namespace) -> int:
    """Run the grid; 0 on success, 2 on bad input."""
    from pdscale.controller.cli.main import write_json  # noqa: PLC0415
    from pdscale.controller.lab.bench import BenchError, infeasibility, parse_policies, run_grid  # noqa: PLC0415
    from pdscale.controller.lab.report import plot_bench_summary, plot_timeline, write_bench_markdown  # noqa: PLC0415
    from pdscale.controller.lab.scenario import SCENARIO_DIR, ScenarioError, resolve_scenarios  # noqa: PLC0415

    if getattr(args, "log_level", None) is None:  # per-tick decisions would drown the table: warnings only
        import logging  # noqa: PLC0415

        import structlog  # noqa: PLC0415

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        policies = parse_policies(args.policies)
        scenarios = resolve_scenarios(args.scenarios, Path(args.scenario_dir) if args.scenario_dir else SCENARIO_DIR)
        if args.quick:
            scenarios = [s.quick() for s in scenarios]
        for sc in scenarios:
            warning = infeasibility(sc)
            if warning:
                sys.stderr.write(f"{sc.name}: {warning}; attainment is also reported over the feasible ones\n")

        from pdscale.forecasting.cli import progress_bar  # noqa: PLC0415  (the one progress bar of the CLIs)

        with progress_bar(quiet=args.json_out == "-") as bar:
            task = bar.add_task("bench runs", total=None)

            def say(line: str) -> None:
                if bar.disable:
                    sys.stderr.write(line + "\n")
                else:  # above the bar, not through it
                    bar.console.print(line, markup=False, highlight=False)

            def finished(req: Any, out: Any) -> None:
                r = out.row
                if "error" in r:
                    say(f"{req.scenario.name:>12} {req.policy:<12} FAILED {r['error']}")
                    return
                say(
                    f"{req.scenario.name:>12} {req.policy:<12} attainment {r['slo_attainment'] or 0:.4f} "
                    f"GPU-h {r['gpu_hours']:.1f} wall {r['wall_s']:.0f}s"
                )

            results = run_grid(
                scenarios,
                policies,
                parallel=args.parallel,
                on_done=finished,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (BenchError, ScenarioError, ValueError, OSError) as exc:
        sys.stderr.write(f"pdscale bench: {exc}\n")
        return 2
    rows = [out.row for _, out in results]
    if args.json_out != "-":
        _table(rows)
    if args.json_out:
        doc: dict[str, Any] = {"quick": bool(args.quick), "rows": rows}
        if not args.no_timelines:
            doc["timelines"] = {f"{req.scenario.name}/{req.policy}": out.timeline.to_json() for req, out in results}
        write_json(doc, args.json_out)
    if args.markdown:
        note = "_Quick windows (`--quick`), not the full scenarios._\n\n" if args.quick else ""
        write_bench_markdown(rows, args.markdown, note=note)
    if args.plot:
        out_dir = Path(args.plot)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_bench_summary(rows, out_dir / "bench_summary.png")
        for req, out in results:
            if "error" in out.row:
                continue
            plot_timeline(
                out.timeline,
                out_dir / f"{req.scenario.name}_{req.policy}.png",
                title=f"{req.scenario.name} / {req.policy}",
            )
    failed = [f"{req.scenario.name}/{req.policy}" for req, out in results if "error" in out.row]
    if failed:
        sys.stderr.write(f"pdscale bench: {len(failed)} run(s) failed: {', '.join(failed)}\n")
        return 1
    return 0
