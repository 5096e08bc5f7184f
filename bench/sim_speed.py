"""Speed and memory of the cluster simulator on a synthesized 24-hour day.

    python bench/sim_speed.py [--hours 24] [--requests-per-day 2000000] [--prefill 8] [--decode 17]

Demand: the ServeGen daily rate shape (first day of ../shared/data/traces/servegen_m_large_rate_14d.csv)
scaled to --requests-per-day, with prompt/output lengths drawn from the Azure 2023 conversation trace.
Prints the figures; no thresholds are asserted here.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

from pdscale.simulator import Cluster, ClusterConfig, Mode
from pdscale.simulator.perf import load_perf_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "traces"


class DayTrace:
    """Arrays sorted by arrival (the shape pdscale.simulator.traces.Trace has)."""

    def __init__(self, arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray) -> None:
        self.arrival_s = arrival_s
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.name = "synth-day"


def synthesize_day(hours: float, requests_per_day: float, seed: int) -> DayTrace:
    """Non-homogeneous Poisson arrivals following the ServeGen rate shape, Azure conv lengths."""
    rng = np.random.default_rng(seed)
    rates = np.loadtxt(DATA / "servegen_m_large_rate_14d.csv", delimiter=",", skiprows=1)
    window_s = float(rates[1, 0] - rates[0, 0])
    duration_s = hours * 3600.0
    n_windows = int(np.ceil(duration_s / window_s))
    shape = rates[:n_windows, 1]
    shape = shape * (requests_per_day / 86400.0) / rates[: int(86400 / window_s), 1].mean()
    counts = rng.poisson(shape * window_s)
    starts = np.repeat(np.arange(n_windows) * window_s, counts)
    arrivals = np.sort(starts + rng.uniform(0.0, window_s, counts.sum()))
    arrivals = arrivals[arrivals < duration_s]
    lengths = np.loadtxt(DATA / "azure2023_conv.csv", delimiter=",", skiprows=1)
    pick = rng.integers(0, len(lengths), len(arrivals))
    return DayTrace(arrivals, lengths[pick, 1].astype(np.int64), lengths[pick, 2].astype(np.int64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--requests-per-day", type=float, default=2_000_000)
    parser.add_argument("--prefill", type=int, default=8, help="prefill replicas (tp4: 4 GPUs each)")
    parser.add_argument("--decode", type=int, default=17, help="decode replicas")
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.DISAGG.value)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    trace = synthesize_day(args.hours, args.requests_per_day, args.seed)
    t_synth = time.perf_counter() - t0
    perf = load_perf_model()
    mode = Mode(args.mode)
    if mode is Mode.DISAGG:
        config = ClusterConfig(perf=perf, prefill_replicas=args.prefill, decode_replicas=args.decode)
    else:
        config = ClusterConfig(perf=perf, mode=mode, colocated_replicas=args.prefill + args.decode)
    gpus = (args.prefill + args.decode) * perf.gpus_per_replica
    t1 = time.perf_counter()
    result = Cluster(config, trace).finish()
    t_sim = time.perf_counter() - t1
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary = result.to_json()
    print(f"requests          {summary['requests']:,} over {args.hours:g} h ({mode.value}, {gpus} GPUs)")
    print(f"completed/dropped {summary['completed']:,} / {summary['dropped']:,}")
    print(f"synthesis wall    {t_synth:.1f} s")
    print(f"simulation wall   {t_sim:.1f} s ({summary['requests'] / t_sim:,.0f} requests/s)")
    print(f"peak RSS          {peak_rss_mb:,.0f} MB")
    print(
        f"ttft p50/p99      {summary['ttft_p50_ms']:.0f} / {summary['ttft_p99_ms']:.0f} ms; "
        f"itl p50/p99 {summary['itl_p50_ms']:.1f} / {summary['itl_p99_ms']:.1f} ms; "
        f"token itl p99 {summary['itl_token_p99_ms']:.1f} ms"
    )
    print(f"slo attainment    {summary['slo_attainment']:.4f}; gpu hours {summary['gpu_hours']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
