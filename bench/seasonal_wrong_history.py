"""What the seasonal floor costs when history is wrong: the `gap` scenario's 7 days of history, today's traffic not.

    python bench/seasonal_wrong_history.py                 # both cases, floor on and off (~4 runs of `gap`)
    python bench/seasonal_wrong_history.py --case late

History says the load returns at minute 280 (the bundled `gap` window, 7 past days); today it never returns
(`no-return`: 2 % from minute 100 to the end) or returns 30 minutes late (`late`: the same 10-minute ramp from
minute 310). `slo` runs on today's trace with the same backfill, with `seasonal_floor` on and off; the script
prints attainment, GPU-hours and the decode peak of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from pdscale.controller.lab.bench import scenario_spec
from pdscale.controller.lab.bench_run import history_backfill, run_policy, warm_start
from pdscale.controller.lab.scenario import SCENARIO_DIR, build_history, build_trace, load_scenario


def _rate(minute: int, back_at: int | None) -> float:
    """The gap curve's rate at ``minute`` (bench/make_scenario_data.py), with the return at ``back_at`` or never."""
    if minute < 90:
        return 1.0
    if minute < 100:
        return 1.0 - 0.98 * (minute - 90) / 10
    if back_at is None or minute < back_at:
        return 0.02
    return min(1.0, 0.02 + 0.98 * (minute - back_at) / 10)


CASES = {"no-return": None, "late": 310}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    gap = load_scenario(SCENARIO_DIR / "gap.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        for case, back_at in CASES.items():
            if args.case not in ("all", case):
                continue
            curve = Path(tmp) / f"{case}.csv"
            rows = [f"{m * 60},{_rate(m, back_at):.6g}" for m in range(360)]
            curve.write_text("window_start_s,requests_per_s\n" + "\n".join(rows) + "\n", encoding="utf-8")
            today = gap.model_copy(update={"traffic": gap.traffic.model_copy(update={"rate_curve": str(curve)})})
            spec = scenario_spec(today)
            trace = build_trace(today)
            backfill = history_backfill(build_history(gap), spec)
            initial = warm_start(trace, spec)
            for on in (True, False):
                run = dataclasses.replace(spec, policy_params={"slo": {"seasonal_floor": on}})
                row = run_policy(trace, run, "slo", initial, backfill).row
                print(
                    f"{case:9s} floor {'on ' if on else 'off'}: attainment {row['slo_attainment'] * 100:.2f} %,"
                    f" {row['gpu_hours']:.1f} GPU-hours, decode peak {row['decode_replicas_peak']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
