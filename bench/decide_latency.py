"""Decision time of one tick with many pools: the ``slo`` policy, the guards and the budget (``core.decide``).

    python bench/decide_latency.py [--pools 16] [--ticks 2000] [--budget 0]

Builds one model's fleet of ``--pools`` pools (half prefill, half decode, tp4 replicas on the builtin
Llama-3.1-70B profile) and feeds ``decide`` a fresh context every simulated 30 s tick: demand on a daily curve
with noise, the request shape, forecasts, each signal's seasonal history (a backfilled day before, then every
tick's value, so the seasonal floor is computed every tick), and the policy and guard state carried from the last
tick, as the loop does. Times ``decide`` alone (fetching, forecasting and actuating are timed by
``bench/tick_latency.py``).
Prints p50 / p99 / max in ms; no threshold is asserted here.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdscale.controller.core.capacity import ProfileCapacityModel
from pdscale.controller.core.decide import DecideInput, decide
from pdscale.controller.core.guards import GuardState
from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import (
    SLO,
    DataState,
    Forecast,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    Signal,
    Signals,
)
from pdscale.controller.policies.slo import SloPolicy
from pdscale.controller.runtime.profile import load_profile
from pdscale.forecasting.seasonal import DAY_S, SeasonalHistory


def _forecast(v: float) -> Forecast:
    return Forecast(mean=v, quantiles={0.5: v, 0.9: v * 1.15, 0.99: v * 1.4})


def _demand(now: float, noise: float) -> dict[Signal, float]:
    rate = 4.0 * (1.0 + 0.6 * math.sin(2 * math.pi * now / 86400.0)) * noise
    return {Signal.REQUEST_RATE: rate, Signal.PREFILL_TPS: rate * 2000.0, Signal.DECODE_CONCURRENCY: rate * 250 * 0.04}


def run(pools: int, ticks: int, budget: int | None, seed: int = 0) -> tuple[np.ndarray, dict[str, int]]:
    """Wall time of ``decide`` per tick in ms, and the last tick's targets."""
    model = ProfileCapacityModel(load_profile("builtin:llama-3.1-70b/tp4"))
    specs = {
        f"{role.value}-{i}": PoolSpec(f"{role.value}-{i}", role, 4, 1, 64, cold_start_s=300.0)
        for i in range(pools // 2)
        for role in (PoolRole.PREFILL, PoolRole.DECODE)
    }
    rng = np.random.default_rng(seed)
    policy = SloPolicy()
    targets = dict.fromkeys(specs, 2)
    policy_state: dict[str, object] = {}
    guard_state = GuardState()
    roles = {PoolRole.PREFILL: (Signal.PREFILL_TPS, Signal.REQUEST_RATE)}
    roles[PoolRole.DECODE] = (Signal.DECODE_CONCURRENCY, Signal.REQUEST_RATE)
    seasonal = {n: {sig: SeasonalHistory() for sig in roles[s.role]} for n, s in specs.items()}
    for t in np.arange(1000.0 - DAY_S - 3600.0, 1000.0 - DAY_S + 30.0 * ticks + 3600.0, 30.0):
        past = _demand(float(t), 1.0)
        for n, s in specs.items():
            for sig in roles[s.role]:
                seasonal[n][sig].observe(float(t), past[sig])
    out = np.empty(ticks)
    for k in range(ticks):
        now = 1000.0 + 30.0 * k
        today = _demand(now, float(rng.gamma(20.0, 1 / 20.0)))
        rate, conc = today[Signal.REQUEST_RATE], today[Signal.DECODE_CONCURRENCY]
        for n, s in specs.items():
            for sig in roles[s.role]:
                seasonal[n][sig].observe(now, today[sig])
        sig = Signals(
            request_rate_per_s=rate,
            arrival_rate_per_s=rate,
            prompt_tokens_per_s=rate * 2000.0,
            running_requests=conc,
            waiting_requests=float(rng.poisson(2.0)),
            isl_mean_tokens=2000.0,
            isl_p90_tokens=4500.0,
            osl_mean_tokens=250.0,
            ttft_p99_ms=float(rng.uniform(200.0, 1200.0)),
            itl_p99_ms=float(rng.uniform(20.0, 60.0)),
        )
        ctx = PolicyContext(
            now_s=now,
            tick_s=30.0,
            pools=specs,
            states={n: PoolState(n, t, t) for n, t in targets.items()},
            observations={n: PoolObservation(n, DataState.OK, sig, sample_time_s=now) for n in specs},
            forecasts={
                n: (
                    {Signal.PREFILL_TPS: _forecast(rate * 2000.0), Signal.REQUEST_RATE: _forecast(rate)}
                    if s.role is PoolRole.PREFILL
                    else {Signal.DECODE_CONCURRENCY: _forecast(conc), Signal.REQUEST_RATE: _forecast(rate)}
                )
                for n, s in specs.items()
            },
            slo=SLO(1000.0, 50.0),
            budget_gpus=budget,
            capacity=model,
            supports_role_flip=True,
            state=policy_state,
            seasonal=seasonal,
        )
        t0 = time.perf_counter()
        res = decide(policy, DecideInput(ctx=ctx, guard_state=guard_state))
        out[k] = (time.perf_counter() - t0) * 1e3
        if res.error:
            raise SystemExit(f"decide failed: {res.error}")
        policy_state, guard_state = dict(res.policy_state), res.guard_state
        targets = {n: p.target for n, p in res.decision.pools.items()}
    return out, targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pools", type=int, default=16)
    p.add_argument("--ticks", type=int, default=2000)
    p.add_argument("--budget", type=int, default=0, help="GPU budget (0: none)")
    a = p.parse_args()
    ms, targets = run(a.pools, a.ticks, a.budget or None)
    ms = ms[50:]
    print(
        f"decide with {a.pools} pools, {len(ms)} ticks (first 50 left out): p50 {np.percentile(ms, 50):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms; last targets {sum(targets.values())} replicas"
    )


if __name__ == "__main__":
    main()
