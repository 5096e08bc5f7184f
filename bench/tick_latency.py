"""Wall time of one control tick (fetch, forecast every signal, decide, guard, actuate, record) with the
default ``ensemble`` forecaster, with refits inline, on the fit thread and in the fit process.

    python bench/tick_latency.py [--scenario retail-day] [--hours 6] [--pause-ms 40]

Replays the scenario's first ``--hours`` through the embedded simulator with the ``slo`` policy on a manual
clock (30 s ticks), as ``pdscale bench`` does, and times ``Reconciler.run_once`` (``TickResult.duration_s``).
A live daemon has 30 s between ticks for a background fit to finish; the replay sleeps ``--pause-ms`` of wall
time after each tick to stand in for that gap (the simulator's own stepping is not timed). The first hour
is left out (imports, first fits). Prints p50 / p99 / max and the share of ticks over 20 ms per mode; no
thresholds are asserted here.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdscale.controller.lab import bench_run
from pdscale.controller.lab.bench import scenario_spec
from pdscale.controller.lab.scenario import build_trace, resolve_scenarios
from pdscale.controller.runtime.replay import replay
from pdscale.forecasting.fitting import FitMode
from pdscale.simulator import Cluster


def run(scenario: str, hours: float, mode: FitMode, pause_s: float) -> np.ndarray:
    """Tick durations in ms after the first hour."""
    sc = resolve_scenarios(scenario)[0]
    sc = sc.model_copy(update={"traffic": sc.traffic.model_copy(update={"duration_s": hours * 3600.0})})
    trace = build_trace(sc)
    spec = replace(scenario_spec(sc), forecaster="ensemble")
    cluster, reconciler = bench_run.control_loop(trace, spec, "slo", bench_run.warm_start(trace, spec), fits=mode)
    durations: list[tuple[float, float]] = []

    def on_tick(t: float, _cluster: Cluster) -> None:
        last = reconciler.last
        if last is not None:
            durations.append((t, last.duration_s * 1000.0))
        if pause_s > 0:
            time.sleep(pause_s)

    replay(reconciler, cluster, tick_s=spec.tick_s, on_tick=on_tick)
    return np.array([d for t, d in durations if t >= 3600.0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="retail-day")
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--pause-ms", type=float, default=40.0)
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    print(f"{args.scenario}, {args.hours:g} h replayed, 30 s ticks, {args.pause_ms:g} ms wall pause after each tick")
    print("| fits | ticks | p50 ms | p99 ms | max ms | ticks > 20 ms |")
    print("|---|---|---|---|---|---|")
    for mode in FitMode:
        d = run(args.scenario, args.hours, mode, args.pause_ms / 1000.0)
        print(
            f"| {mode.value} | {d.size} | {np.percentile(d, 50):.1f} "
            f"| {np.percentile(d, 99):.1f} | {d.max():.0f} | {np.mean(d > 20.0):.1%} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
