"""Forecast accuracy and per-tick cost of the pdscale forecasters on the shared traces.

Run: ``python bench/forecast_accuracy.py [--jobs 2] [--servegen-1min-days 4] [--timing-steps 3000]``.
Prints one table row per (series, step, signal, horizon): MASE of last_value, arima and ensemble,
the ensemble's MASE ratio to each, and its p90 coverage; then p50/p99/max of observe+predict per model.
Scores start after the first fifth of each series (warm-up), the same for every model.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdscale.forecasting.backtest import backtest, score
from pdscale.forecasting.base import Signal
from pdscale.forecasting.cli import make_model
from pdscale.forecasting.signals import DecodeTimeModel, SignalSeries, build_signals, series_from_rate

TRACES = Path(os.environ.get("PDSCALE_TRACES", "/work/shared/data/traces"))
ITL = DecodeTimeModel(itl_ms=40.0)
MODELS = ("last_value", "arima", "ensemble")


@dataclass(frozen=True)
class Case:
    series: str
    step_s: float
    signal: Signal
    horizon_s: float


def _load_series(name: str, step_s: float, days: float) -> SignalSeries:
    if name.startswith("azure"):
        d = np.loadtxt(TRACES / f"{name}.csv", delimiter=",", skiprows=1)
        return build_signals(d[:, 0], d[:, 1], d[:, 2], step_s=step_s, decode=ITL)
    g = np.loadtxt(TRACES / "servegen_m_large_rate_14d.csv", delimiter=",", skiprows=1)
    conv = np.loadtxt(TRACES / "azure2023_conv.csv", delimiter=",", skiprows=1)
    rng = np.random.default_rng(0)
    if step_s >= 600:
        rate = g[:, 1]
    else:  # synthesise a finer series: linear interpolation of the 10-minute rate plus Poisson noise
        t = np.arange(0, g[-1, 0] + 600, step_s)
        rate = np.interp(t, g[:, 0] + 300, g[:, 1])
        rate = rate[: int(days * 86400 / step_s)]
    return series_from_rate(rate, step_s=step_s, input_tokens=conv[:, 1], output_tokens=conv[:, 2], decode=ITL, rng=rng)


def run_case(case: Case, days: float) -> dict[str, object]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    s = _load_series(case.series, case.step_s, days)
    y = s.signal(case.signal)
    drivers = (s.request_rate_rps, s.decode_s) if case.signal is Signal.DECODE_CONCURRENCY else None
    warm = y.size // 5
    out: dict[str, object] = {"case": case, "n": int(y.size), "h": max(1, math.ceil(case.horizon_s / case.step_s))}
    for name in MODELS:
        m = make_model(name, step_s=case.step_s, season_s=86400.0, horizon_s=case.horizon_s, signal=case.signal)
        res = backtest(m, s.t_s, y, horizon_s=case.horizon_s, step_s=case.step_s, drivers=drivers)
        out[name] = score(res, y, warmup_steps=warm)
        if name == "ensemble":
            out["weights"] = dict(getattr(m, "weights", {}))
    return out


def timing(name: str, steps: int) -> tuple[str, float, float, float]:
    """p50/p99/max ms of observe+predict on the synthesised 1-minute servegen prefill series."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    s = _load_series("servegen", 60.0, 14)
    y = s.prefill_tps[-steps:]
    m = make_model(name, step_s=60.0, season_s=86400.0, horizon_s=300.0, signal=Signal.PREFILL_TPS)
    dur = np.zeros(y.size)
    for i, v in enumerate(y):
        start = time.perf_counter()
        m.observe(i * 60.0, float(v))
        m.predict(300.0)
        dur[i] = time.perf_counter() - start
    return name, *(float(x) * 1000 for x in (np.percentile(dur, 50), np.percentile(dur, 99), dur.max()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--servegen-1min-days", type=float, default=4.0)
    p.add_argument("--timing-steps", type=int, default=4 * 1440)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--include-1s", action="store_true", help="also the 1 s azure series (minutes per case)")
    args = p.parse_args()
    cases = []
    for series in ("azure2023_conv", "azure2023_code"):
        for step in (1.0, 60.0) if args.include_1s else (60.0,):
            for sig in (Signal.PREFILL_TPS, Signal.DECODE_CONCURRENCY):
                cases.extend(Case(series, step, sig, h) for h in (300.0, 1800.0))
    for step in (600.0, 60.0):
        for sig in (Signal.PREFILL_TPS, Signal.DECODE_CONCURRENCY):
            cases.extend(Case("servegen", step, sig, h) for h in (300.0, 1800.0))
    started = time.perf_counter()
    print(
        "| series | step | signal | horizon | steps (h) | MASE last_value | MASE arima | MASE ensemble "
        "| ens/last | ens/arima | ens p90 cov | ensemble weights at end |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    pool = ProcessPoolExecutor(max_workers=args.jobs)
    for r in pool.map(run_case, cases, [args.servegen_1min_days] * len(cases)):
        c = r["case"]
        assert isinstance(c, Case)
        lv, ar, en = (r[m] for m in MODELS)
        w = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["weights"].items(), key=lambda kv: -kv[1]))  # type: ignore[union-attr]
        print(
            f"| {c.series} | {c.step_s:g} s | {c.signal.value} | {c.horizon_s / 60:g} min | {r['n']} ({r['h']}) "
            f"| {lv.mase:.3f} | {ar.mase:.3f} | {en.mase:.3f} | {en.mase / lv.mase:.2f} | {en.mase / ar.mase:.2f} "  # type: ignore[union-attr]
            f"| {en.p90_coverage:.3f} | {w} |"
        )  # type: ignore[union-attr]
    names = ("last_value", "seasonal_naive", "ewma", "holt", "holt_winters", "arima", "quantile_gbm", "ensemble")
    timings = [] if args.skip_timing else pool.map(timing, names, [args.timing_steps] * len(names))
    if not args.skip_timing:
        print("\n| model | observe+predict p50 ms | p99 ms | max ms |")
        print("|---|---|---|---|")
        for name, p50, p99, mx in timings:
            print(f"| {name} | {p50:.2f} | {p99:.2f} | {mx:.0f} |", flush=True)
    pool.shutdown()
    print(f"\nbench wall time {time.perf_counter() - started:.0f} s with {args.jobs} jobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
