"""Compare scaling policies on replayed traffic: SLO attainment and GPU-hours against the hindsight oracle.

    python bench/policy_compare.py [--scenarios conv,code,day] [--policies slo,reactive,dynamo-like,oracle]

Scenarios (Llama-3.1-70B on tp4 H100 replicas, SLO TTFT 1 s / ITL 50 ms at p99, 30 s ticks, 300 s cold start):
- conv: the Azure 2023 conversation hour, re-synthesized on its own 60 s rate curve x ``--conv-scale``;
- code: the Azure 2023 code hour, likewise x ``--code-scale``;
- day:  24 h of the ServeGen daily rate shape (first day of the 14-day curve) x ``--day-scale``, Azure
  conversation lengths.
The oracle gets the exact future (controller.oracle_demand) and scales instantly (cold start 0, no windows).
Prints one row per (scenario, policy); ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np
import structlog

from actuators.simulator import SimulatorActuator
from controller.assembly import build
from controller.oracle_demand import OracleDemand, build_oracle_demand
from controller.plugins import PluginEnv
from controller.policies.oracle import OraclePolicy
from controller.profile import build_capacity_model
from controller.replay import cluster_config, replay
from controller.settings import Settings
from controller.sources.simulator import SimulatorMetricsSource
from simulator import Cluster
from simulator.perf import load_perf_model
from simulator.synth import synthesize
from simulator.traces import RateCurve, Trace, bundled_rate_curve, bundled_trace


def _own_curve(trace: Trace, window_s: float = 60.0) -> RateCurve:
    n = int(np.ceil(trace.arrival_s[-1] / window_s))
    counts = np.bincount((trace.arrival_s // window_s).astype(int), minlength=n)[:n]
    starts = np.arange(n, dtype=np.float64) * window_s
    return RateCurve(starts, counts / window_s, window_s, f"{trace.name}-curve")


def scenario_trace(name: str, args: argparse.Namespace) -> Trace:
    """The replayed trace of a scenario."""
    if name in ("conv", "code"):
        base = bundled_trace(f"azure-{name}")
        scale = args.conv_scale if name == "conv" else args.code_scale
        return synthesize(_own_curve(base), base, duration_s=3600.0, rate_scale=scale, seed=args.seed)
    curve = bundled_rate_curve("servegen-14d")
    day = RateCurve(curve.window_start_s[:144], curve.requests_per_s[:144], curve.window_s, "servegen-day1")
    return synthesize(day, bundled_trace("azure-conv"), duration_s=86400.0, rate_scale=args.day_scale, seed=args.seed)


def settings_for(policy: str, args: argparse.Namespace, initial: dict[str, int] | None = None) -> Settings:
    """Settings of one run; the oracle scales instantly. ``initial``: replicas ready at t=0 per pool."""
    oracle = policy == "oracle"
    initial = initial or {"prefill": 3, "decode": 3}
    pool = {
        "gpus_per_replica": 4,
        "min_replicas": 1,
        "max_replicas": 32,
        "cold_start_s": 0.0 if oracle else 300.0,
    }
    guards: dict[str, Any] = {"max_step_up": 4, "max_step_down": 1, "scale_down_window_s": 300.0}
    if oracle:
        guards = {"max_step_up": 100, "max_step_down": 100, "scale_down_window_s": 0.0, "hold_while_starting": False}
    return Settings.model_validate(
        {
            "model": "llama-3.1-70b",
            "tick_s": 30.0,
            "slo": {"ttft_ms": 1000.0, "itl_ms": 50.0, "quantile": 0.99},
            "pools": [
                {"name": name, "role": name, "initial_replicas": initial[name], **pool}
                for name in ("prefill", "decode")
            ],
            "policy": {"name": "static" if oracle else policy, "params": args.params.get(policy, {})},
            "forecasting": {"model": args.forecaster, "params": {}},
            "guards": guards,
            "capacity": {"profile": "builtin:llama-3.1-70b/tp4"},
            "metrics": {"source": "simulator"},
            "actuator": {"name": "simulator"},
            "simulator": {"trace": "bundled:azure-conv"},
            "admin": {"enabled": False},
            "telemetry": {"enabled": False},
        }
    )


def oracle_demand(trace: Trace, settings: Settings) -> OracleDemand:
    """The trace's exact future, binned per tick."""
    return build_oracle_demand(
        trace.arrival_s,
        trace.input_tokens,
        trace.output_tokens,
        capacity=build_capacity_model(settings),
        slo=settings.slo.to_slo(),
        roles={p.name: p.role for p in settings.pools},
        bin_s=settings.tick_s,
    )


def warm_start(trace: Trace, args: argparse.Namespace) -> dict[str, int]:
    """Every policy starts with the pools the oracle needs for the first ten minutes (traffic was already
    flowing before the replayed window), so the comparison is about following the load, not a cold fleet."""
    settings = settings_for("oracle", args)
    demand = oracle_demand(trace, settings)
    policy = OraclePolicy({"demand": demand})
    model = build_capacity_model(settings)
    out = {}
    for p in settings.pool_specs().values():
        w = demand.workload(0.0, 600.0, policy.defaults)
        out[p.name] = max(
            1, model.replicas_needed(p, demand.peak(p.name, 0.0, 600.0), settings.slo.to_slo(), workload=w).replicas
        )
    return out


def run_one(trace: Trace, policy: str, args: argparse.Namespace, initial: dict[str, int]) -> dict[str, Any]:
    """Replay ``trace`` under ``policy``; the simulator's summary plus wall time."""
    settings = settings_for(policy, args, initial)
    perf = load_perf_model("llama-3.1-70b", tp=4)
    cluster = Cluster(cluster_config(settings, perf), trace)
    pools = {p.name: p for p in settings.pools}
    asm = build(
        settings,
        env=PluginEnv(resources={"simulator": cluster}),
        source=SimulatorMetricsSource(pools, cluster=cluster),
        actuator=SimulatorActuator(pools, cluster=cluster),
    )
    if policy == "oracle":
        asm.reconciler.policy = OraclePolicy({"demand": oracle_demand(trace, settings)})
    started = time.perf_counter()
    result = replay(asm.reconciler, cluster, tick_s=settings.tick_s)
    out = result.to_json()
    out["wall_s"] = time.perf_counter() - started
    return out


def main() -> None:
    """Run the grid and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default="conv,code,day")
    p.add_argument("--policies", default="oracle,slo,reactive,dynamo-like")
    p.add_argument("--conv-scale", type=float, default=4.0)
    p.add_argument("--code-scale", type=float, default=8.0)
    p.add_argument("--day-scale", type=float, default=0.06)
    p.add_argument("--forecaster", default="ensemble")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--params", type=json.loads, default={}, help='policy params, e.g. {"slo": {"headroom": 1.1}}')
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rows: list[dict[str, Any]] = []
    print(
        "| scenario | policy | requests | SLO attainment | GPU-hours | x oracle | TTFT p99 ms | ITL p99 ms | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scen in args.scenarios.split(","):
        trace = scenario_trace(scen, args)
        initial = warm_start(trace, args)
        oracle_gpu_h: float | None = None
        for pol in args.policies.split(","):
            r = run_one(trace, pol, args, initial)
            if pol == "oracle":
                oracle_gpu_h = r["gpu_hours"]
            ratio = r["gpu_hours"] / oracle_gpu_h if oracle_gpu_h else float("nan")
            rows.append({"scenario": scen, "policy": pol, **r, "x_oracle": ratio})
            print(
                f"| {scen} | {pol} | {r['requests']} | {r['slo_attainment']:.4f} | {r['gpu_hours']:.1f} | "
                f"{ratio:.2f} | {r['ttft_p99_ms']:.0f} | {r['itl_p99_ms']:.1f} | {r['wall_s']:.0f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
