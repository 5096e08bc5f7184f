"""Run one policy on one trace through the cluster simulator and summarise it (the unit of ``pdscale bench``
and of ``pdscale plan``'s autoscaled replay).

    spec = RunSpec(model="llama-3.1-70b", tp=4, slo=SLO(1000, 50, 0.99))
    outcome = run_policy(trace, spec, "slo", initial={"prefill": 3, "decode": 5})
    outcome.row["gpu_hours"], outcome.timeline

``oracle`` gets the trace's exact future (pdscale.controller.lab.oracle_demand) and a capacity model of the simulated
hardware itself, and scales instantly (cold start 0, no guard windows). ``static`` holds ``initial``.
Colocated serving runs with ``spec.mode = "colocated"`` and a ``colocated`` pool.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pdscale.actuators.simulator import SimulatorActuator
from pdscale.controller.core.capacity import ProfileCapacityModel
from pdscale.controller.core.types import ROLE_SIGNALS, SLO, PoolRole, PoolSpec, Signal
from pdscale.controller.lab.oracle_demand import build_oracle_demand
from pdscale.controller.policies.demand import split_budget
from pdscale.controller.policies.oracle import OraclePolicy
from pdscale.controller.runtime.assembly import build
from pdscale.controller.runtime.plugins import PluginEnv, PluginGroup, Registry
from pdscale.controller.runtime.profile import profile_from_perf
from pdscale.controller.runtime.replay import cluster_config, replay
from pdscale.controller.runtime.settings import Settings
from pdscale.controller.sources.simulator import SimulatorMetricsSource
from pdscale.forecasting.fitting import FitMode
from pdscale.simulator import Cluster, ClusterConfig, Mode
from pdscale.simulator.hardware import load_hardware
from pdscale.simulator.perf import load_perf_model

__all__ = [
    "BUILTIN_ORDER",
    "YARDSTICKS",
    "Backfill",
    "RunOutcome",
    "RunSpec",
    "Timeline",
    "control_loop",
    "history_backfill",
    "known_policies",
    "run_policy",
    "simulate_policy",
    "simulate_static",
    "timeline_of",
    "uses_forecasts",
    "warm_start",
]

BUILTIN_ORDER: tuple[str, ...] = ("slo", "static", "reactive", "dynamo-like", "keda", "oracle", "hindsight")
"""Table order of the built-in policies and yardsticks; other registered policy plugins follow, sorted by name."""

YARDSTICKS: tuple[str, ...] = ("oracle", "hindsight")
"""Bench rows that know the trace's exact future and the true hardware (nothing a deployed policy can know):

- ``oracle``: exact future demand, instant scaling (cold start 0, no guards): the cost of the demand itself.
- ``hindsight``: exact future demand with the same cold start and guards as every policy: the best any policy
  can do with that actuation delay. ``x hindsight`` is a policy's forecast and sizing error alone; the gap
  between hindsight and oracle is what the cold start costs.
"""


def known_policies() -> list[str]:
    """Every registered policy plugin (entry-point group ``pdscale.policies``), built-ins first."""

    names = {*Registry().names(PluginGroup.POLICIES), "hindsight"}
    return [n for n in BUILTIN_ORDER if n in names] + sorted(n for n in names if n not in BUILTIN_ORDER)


def uses_forecasts(policy: str) -> bool:
    """Whether a policy reads the forecasts: its class says so with ``uses_forecasts = False`` (default True).

    Runs of policies that do not use the ``last_value`` forecaster (the loop still forecasts every signal for
    its records), which leaves their decisions unchanged and saves most of a tick."""

    if policy in YARDSTICKS:
        return False
    return bool(getattr(Registry().load(PluginGroup.POLICIES, policy), "uses_forecasts", True))


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What every run of a scenario shares: model, replica size, SLO, loop and hardware settings."""

    model: str
    tp: int
    slo: SLO
    tick_s: float = 30.0
    cold_start_s: float = 300.0
    max_replicas: int = 32
    budget_gpus: int | None = None
    slowdown: float = 1.0
    forecaster: str = "last_value"
    policy_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mode: str = "disagg"
    hardware_file: str | None = None
    """The simulated replica's hardware file (``pdscale.simulator.hardware``); None: the calibrated H100."""
    colocated_token_budget: int = 2048
    """Prompt tokens mixed into one colocated iteration (simulator ``colocated_token_budget``)."""

    def roles(self) -> tuple[str, ...]:
        """Pool names (equal to their roles) of this mode."""
        return ("prefill", "decode") if self.mode == "disagg" else ("colocated",)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Per sample interval (``t_s`` = interval end): demand, replicas, utilisation and latency vs SLO.

    ``replicas``/``busy_share``/``kv_share`` map a pool name to one value per interval; latencies are over the
    requests that finished in the interval (NaN when none did).
    """

    t_s: npt.NDArray[np.float64]
    arrivals_per_s: npt.NDArray[np.float64]
    prompt_tokens_per_s: npt.NDArray[np.float64]
    replicas: Mapping[str, npt.NDArray[np.float64]]
    busy_share: Mapping[str, npt.NDArray[np.float64]]
    kv_share: Mapping[str, npt.NDArray[np.float64]]
    ttft_p99_ms: npt.NDArray[np.float64]
    itl_p99_ms: npt.NDArray[np.float64]
    ttft_slo_ms: float
    itl_slo_ms: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready lists (NaN as null)."""

        def clean(a: npt.NDArray[np.float64]) -> list[float | None]:
            return [None if math.isnan(x) else round(float(x), 4) for x in a]

        return {
            "t_s": clean(self.t_s),
            "arrivals_per_s": clean(self.arrivals_per_s),
            "prompt_tokens_per_s": clean(self.prompt_tokens_per_s),
            "replicas": {k: clean(v) for k, v in self.replicas.items()},
            "busy_share": {k: clean(v) for k, v in self.busy_share.items()},
            "kv_share": {k: clean(v) for k, v in self.kv_share.items()},
            "ttft_p99_ms": clean(self.ttft_p99_ms),
            "itl_p99_ms": clean(self.itl_p99_ms),
            "ttft_slo_ms": self.ttft_slo_ms,
            "itl_slo_ms": self.itl_slo_ms,
        }


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """One run: the simulator's summary (plus policy, wall time, GPU split) and its timeline."""

    row: dict[str, Any]
    timeline: Timeline


def _binned_p99(
    finish: npt.NDArray[np.float64], values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> Any:
    ok = ~np.isnan(finish) & ~np.isnan(values)
    f, v = finish[ok], values[ok]
    idx = np.searchsorted(edges, f, side="left") - 1
    out = np.full(len(edges) - 1, np.nan)
    if not len(f):
        return out
    order = np.argsort(idx, kind="stable")
    idx, v = idx[order], v[order]
    bounds = np.searchsorted(idx, np.arange(len(edges)))
    for b in range(len(edges) - 1):
        chunk = v[bounds[b] : bounds[b + 1]]
        if len(chunk):
            out[b] = float(np.quantile(chunk, 0.99)) * 1000.0
    return out


def timeline_of(result: Any) -> Timeline:
    """Condense a ``simulator.SimResult`` into a :class:`Timeline`."""
    pools = sorted({s.pool.value for s in result.samples})
    times = sorted({s.t_s for s in result.samples})
    t = np.asarray(times, dtype=np.float64)
    pos = {x: i for i, x in enumerate(times)}
    n = len(times)
    replicas = {p: np.zeros(n) for p in pools}
    busy = {p: np.full(n, np.nan) for p in pools}
    kv = {p: np.full(n, np.nan) for p in pools}
    arrivals = np.zeros(n)
    prompt = np.zeros(n)
    for s in result.samples:
        i, p = pos[s.t_s], s.pool.value
        replicas[p][i] = s.ready + s.starting + s.draining
        busy[p][i] = s.busy_share
        kv[p][i] = s.kv_share
        if p in ("prefill", "colocated"):
            arrivals[i] = s.arrivals_per_s
            prompt[i] = s.prompt_tokens_per_s
    interval = float(t[1] - t[0]) if n > 1 else 60.0
    edges = np.concatenate([[t[0] - interval], t]) if n else np.zeros(1)
    return Timeline(
        t_s=t,
        arrivals_per_s=arrivals,
        prompt_tokens_per_s=prompt,
        replicas=replicas,
        busy_share=busy,
        kv_share=kv,
        ttft_p99_ms=_binned_p99(result.finish_s, result.ttft_s, edges),
        itl_p99_ms=_binned_p99(result.finish_s, result.itl_s, edges),
        ttft_slo_ms=float(result.ttft_slo_ms),
        itl_slo_ms=float(result.itl_slo_ms),
    )


def hardware_perf(spec: RunSpec) -> Any:
    """The simulated (true) hardware of a run: its hardware variant (else the calibrated H100), slowed by the
    scenario's slowdown. The controller's profile stays the default one."""
    perf = (
        load_hardware(spec.hardware_file).perf_model(spec.model, spec.tp)
        if spec.hardware_file
        else load_perf_model(spec.model, tp=spec.tp)
    )
    return perf.scaled(spec.slowdown) if spec.slowdown != 1.0 else perf


def hardware_engine(spec: RunSpec) -> dict[str, Any]:
    """Engine limits the run's hardware variant sets (ClusterConfig fields); empty for the default."""
    return dict(load_hardware(spec.hardware_file).engine) if spec.hardware_file else {}


def _settings(spec: RunSpec, policy: str, initial: Mapping[str, int]) -> Any:

    oracle = policy == "oracle"
    pool = {
        "gpus_per_replica": spec.tp,
        "min_replicas": 1,
        "max_replicas": spec.max_replicas,
        "cold_start_s": 0.0 if oracle else spec.cold_start_s,
    }
    guards: dict[str, Any] = {}
    if oracle:
        guards = {"max_step_up": 1000, "max_step_down": 1000, "scale_down_window_s": 0.0, "hold_while_starting": False}
    params: dict[str, Any] = dict(spec.policy_params.get(policy, {}))
    name = policy
    if policy in ("static", *YARDSTICKS):  # yardsticks get their policy in control_loop
        name, params = "static", {"replicas": {r: int(initial[r]) for r in spec.roles()}}
    return Settings.model_validate(
        {
            "model": spec.model,
            "tick_s": spec.tick_s,
            "slo": {"ttft_ms": spec.slo.ttft_ms, "itl_ms": spec.slo.itl_ms, "quantile": spec.slo.quantile},
            "budget": {"max_gpus": spec.budget_gpus},
            "pools": [
                {"name": r, "role": r, "initial_replicas": min(spec.max_replicas, max(1, int(initial[r]))), **pool}
                for r in spec.roles()
            ],
            "policy": {"name": name, "params": params},
            "forecasting": {"model": spec.forecaster if uses_forecasts(name) else "last_value", "params": {}},
            "guards": guards,
            "capacity": {"profile": f"builtin:{spec.model}/tp{spec.tp}"},
            "metrics": {"source": "simulator"},
            "actuator": {"name": "simulator"},
            "simulator": {
                "mode": spec.mode,
                "slowdown": spec.slowdown,
                "params": {
                    **({"colocated_token_budget": spec.colocated_token_budget} if spec.mode == "colocated" else {}),
                    **hardware_engine(spec),
                },
            },
            "admin": {"enabled": False},
            "telemetry": {"enabled": False},
        }
    )


def hardware_capacity(spec: RunSpec) -> Any:
    """A capacity model of the *simulated* hardware (slowdown included): what the oracle knows."""

    return ProfileCapacityModel(profile_from_perf(hardware_perf(spec)))


def oracle_demand_for(trace: Any, spec: RunSpec) -> Any:
    """The trace's exact future demand per tick (``pdscale.controller.lab.oracle_demand``) on the simulated hardware."""

    return build_oracle_demand(
        trace.arrival_s,
        trace.input_tokens,
        trace.output_tokens,
        capacity=hardware_capacity(spec),
        slo=spec.slo,
        roles={r: PoolRole(r) for r in spec.roles()},
        bin_s=spec.tick_s,
    )


Backfill = Mapping[tuple[str, Signal], tuple[list[float], list[float]]]
"""Past values per (pool, signal) fed to the loop's seasonal history before the first tick."""


def history_backfill(history: list[tuple[float, Any]], spec: RunSpec) -> Backfill:
    """What a Prometheus range query over the past days would give the loop: each history trace's demand signals
    per tick (the oracle's binning on the simulated hardware: rate, prompt tokens/s, decoding sequences and their
    KV tokens), at the middle of each tick on the replay's clock (``offset_s`` + trace time)."""
    out: dict[tuple[str, Signal], tuple[list[float], list[float]]] = {}
    for offset_s, trace in history:
        if not len(trace.arrival_s):
            continue
        demand = oracle_demand_for(trace, spec)
        for role in spec.roles():
            for sig in ROLE_SIGNALS[PoolRole(role)]:
                values = demand.series[sig]
                times = offset_s + (np.arange(len(values)) + 0.5) * demand.bin_s
                ts, vs = out.setdefault((role, sig), ([], []))
                ts.extend(float(t) for t in times)
                vs.extend(float(v) for v in values)
    return out


def pool_spec(spec: RunSpec, role: str) -> Any:
    """The core PoolSpec of the pool named after ``role``."""

    return PoolSpec(
        name=role, role=PoolRole(role), gpus_per_replica=spec.tp, min_replicas=1, max_replicas=spec.max_replicas
    )


def warm_start(trace: Any, spec: RunSpec, window_s: float = 600.0) -> dict[str, int]:
    """The pools the oracle needs for the first ``window_s`` (traffic was already flowing before the replayed
    window), so every policy starts from the same fleet and the comparison is about following the load."""

    demand = oracle_demand_for(trace, spec)
    model = hardware_capacity(spec)
    w = demand.workload(0.0, window_s, OraclePolicy({"demand": demand}).defaults)
    pools = {r: pool_spec(spec, r) for r in spec.roles()}
    out: dict[str, int] = {}
    for r, pool in pools.items():
        need = model.replicas_needed(pool, demand.peak(r, 0.0, window_s), spec.slo, workload=w).replicas
        out[r] = max(1, min(spec.max_replicas, need))
    if spec.budget_gpus is not None and sum(out.values()) * spec.tp > spec.budget_gpus:
        out = dict(split_budget(out, pools, spec.budget_gpus))
    return out


def simulate_static(trace: Any, spec: RunSpec, sizes: Mapping[str, int]) -> Any:
    """The simulator alone with fixed pool sizes (no control loop): a ``SimResult``."""

    if spec.mode == "disagg":
        cfg = ClusterConfig(
            perf=hardware_perf(spec),
            prefill_replicas=int(sizes["prefill"]),
            decode_replicas=int(sizes["decode"]),
            cold_start_s=spec.cold_start_s,
            ttft_slo_ms=spec.slo.ttft_ms,
            itl_slo_ms=spec.slo.itl_ms,
            **hardware_engine(spec),
        )
    else:
        cfg = ClusterConfig(
            perf=hardware_perf(spec),
            mode=Mode.COLOCATED,
            colocated_replicas=int(sizes["colocated"]),
            colocated_token_budget=spec.colocated_token_budget,
            cold_start_s=spec.cold_start_s,
            ttft_slo_ms=spec.slo.ttft_ms,
            itl_slo_ms=spec.slo.itl_ms,
            **hardware_engine(spec),
        )
    return Cluster(cfg, trace).finish()


def control_loop(
    trace: Any,
    spec: RunSpec,
    policy: str,
    initial: Mapping[str, int],
    *,
    fits: str = "inline",
    backfill: Backfill | None = None,
) -> Any:
    """The simulated cluster and the control loop that drives it for one run: ``(cluster, reconciler)``.

    ``oracle`` gets the trace's exact future and a capacity model of the simulated hardware; ``fits`` is where the
    forecasters refit (``inline`` for reproducible runs); ``backfill`` (``history_backfill``) is fed to the
    loop's seasonal history before the first tick.
    """

    settings = _settings(spec, policy, initial)
    cluster = Cluster(cluster_config(settings, hardware_perf(spec)), trace)
    pools = {p.name: p for p in settings.pools}
    asm = build(
        settings,
        env=PluginEnv(resources={"simulator": cluster}),
        source=SimulatorMetricsSource(pools, cluster=cluster),
        actuator=SimulatorActuator(pools, cluster=cluster),
        fits=FitMode(fits),
    )
    if policy in YARDSTICKS:
        asm.reconciler.policy = OraclePolicy({"demand": oracle_demand_for(trace, spec)})
        asm.reconciler.capacity = hardware_capacity(spec)
    for (pool, sig), (times, values) in (backfill or {}).items():
        asm.reconciler.seasonal.backfill(pool, sig, times, list(values))
    return cluster, asm.reconciler


def simulate_policy(
    trace: Any,
    spec: RunSpec,
    policy: str,
    initial: Mapping[str, int],
    on_tick: Callable[[float, Any], None] | None = None,
    backfill: Backfill | None = None,
) -> Any:
    """The ``simulator.SimResult`` of ``trace`` under ``policy`` from ``initial`` replicas (``static``: held)."""

    if policy == "static":
        return simulate_static(trace, spec, {r: max(1, min(spec.max_replicas, int(initial[r]))) for r in spec.roles()})
    cluster, reconciler = control_loop(trace, spec, policy, initial, backfill=backfill)
    return replay(reconciler, cluster, tick_s=spec.tick_s, on_tick=on_tick)


def run_policy(
    trace: Any, spec: RunSpec, policy: str, initial: Mapping[str, int], backfill: Backfill | None = None
) -> RunOutcome:
    """Replay ``trace`` under ``policy`` starting from ``initial`` replicas per pool (``static``: held there)."""
    started = time.perf_counter()
    result = simulate_policy(trace, spec, policy, initial, backfill=backfill)
    row = result.to_json()
    tl = timeline_of(result)
    peak = {f"{p}_replicas_peak": int(np.max(v)) if len(v) else 0 for p, v in tl.replicas.items()}
    row.update(policy=policy, wall_s=time.perf_counter() - started, initial=dict(initial), **peak)
    row["peak_gpus"] = int(np.max(sum(tl.replicas.values()))) * spec.tp if tl.replicas else 0
    return RunOutcome(row=row, timeline=tl)
