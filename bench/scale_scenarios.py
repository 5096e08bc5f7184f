"""Find the rate scale at which a scenario's best static split needs a given number of GPUs.

    python bench/scale_scenarios.py retail-day --gpus 48 [--verify]

The capacity model's answer for the trace's peak demand (``pdscale.controller.lab.planner.model_estimate``) is
bisected over ``traffic.rate_scale``; ``--verify`` then runs the planner's simulator search
(``search_static_split``) at the scale found and prints the split to record as the scenario's ``static``.
The scenario files (controller/bundled/scenarios/) say which figures this script printed for them.
"""

from __future__ import annotations

import argparse
import logging
import time

import structlog

from pdscale.controller.lab.bench import scenario_spec
from pdscale.controller.lab.planner import model_estimate, search_static_split
from pdscale.controller.lab.scenario import SCENARIO_DIR, Scenario, build_trace, load_scenario


def _with_scale(sc: Scenario, scale: float) -> Scenario:
    return sc.model_copy(update={"traffic": sc.traffic.model_copy(update={"rate_scale": scale})})


def estimate_gpus(sc: Scenario) -> int:
    """GPUs of the capacity model's peak-demand split."""
    spec = scenario_spec(sc)
    return sum(model_estimate(build_trace(sc), spec).values()) * spec.tp


def main() -> None:
    """Bisect the scale, optionally verify in the simulator."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario")
    p.add_argument("--gpus", type=int, default=48)
    p.add_argument("--lo", type=float, default=0.001)
    p.add_argument("--hi", type=float, default=100.0)
    p.add_argument("--verify", action="store_true")
    p.add_argument("--scale", type=float, help="skip the bisection, verify this scale")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sc = load_scenario(SCENARIO_DIR / f"{args.scenario}.yaml")
    sc = sc.model_copy(update={"static": None, "budget_gpus": None})
    if args.scale is None:
        lo, hi = args.lo, args.hi
        for _ in range(18):
            mid = (lo * hi) ** 0.5
            gpus = estimate_gpus(_with_scale(sc, mid))
            print(f"rate_scale {mid:.5f}: model estimate {gpus} GPUs")
            lo, hi = (mid, hi) if gpus < args.gpus else (lo, mid)
            if hi / lo < 1.01:
                break
        scale = round(lo, 4)
    else:
        scale = args.scale
    sc = _with_scale(sc, scale)
    trace = build_trace(sc)
    print(f"rate_scale {scale}: {len(trace)} requests, model estimate {estimate_gpus(sc)} GPUs")
    if args.verify or args.scale is not None:
        started = time.perf_counter()
        found = search_static_split(trace, scenario_spec(sc), sc.attainment_target)
        for e in found.evaluations:
            print(f"  simulated {e.sizes}: {e.gpus} GPUs, attainment {e.attainment:.4f}")
        print(
            f"static split {found.sizes} = {found.gpus} GPUs, met={found.met} ({time.perf_counter() - started:.0f} s)"
        )


if __name__ == "__main__":
    main()
