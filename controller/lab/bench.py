"""The benchmark grid: every policy on every scenario, against two yardsticks that know the future.

    rows = run_grid(resolve_scenarios("all"), parse_policies("all"), parallel=False)

One run per (scenario, policy); every run of a scenario starts from the same warm fleet (what the oracle
needs for the first ten minutes). ``static`` holds the scenario's ``static`` split, or the planner's best
static split when the file has none. ``x_oracle`` and ``x_hindsight`` are a run's GPU-hours over those
yardsticks' on the same scenario (``bench_run.YARDSTICKS`` says what each knows).
With ``parallel=True`` the runs fan out over Ray (``ray.init()`` locally, or the cluster at ``RAY_ADDRESS``),
one remote task per run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from pdscale.controller.core.types import SLO
from pdscale.controller.lab.bench_run import (
    YARDSTICKS,
    RunOutcome,
    RunSpec,
    Timeline,
    hardware_perf,
    history_backfill,
    known_policies,
    pool_spec,
    run_policy,
    simulate_policy,
    uses_forecasts,
    warm_start,
)
from pdscale.controller.lab.planner import search_static_split
from pdscale.controller.lab.scenario import Scenario, build_history, build_trace
from pdscale.controller.policies.demand import split_budget
from pdscale.simulator.feasibility import feasibility

__all__ = [
    "BenchError",
    "RunRequest",
    "infeasibility",
    "parse_policies",
    "run_grid",
    "run_request",
    "scenario_spec",
    "simulate_scenario",
    "static_split",
]

log = structlog.get_logger(__name__)


class BenchError(ValueError):
    """A bench request cannot run (unknown policy, Ray missing ...)."""


def parse_policies(spec: str) -> list[str]:
    """``all`` (every registered policy plugin) or a comma list of registered policy names."""

    known = known_policies()
    names = list(known) if spec.strip() == "all" else [p.strip() for p in spec.split(",") if p.strip()]
    unknown = [p for p in names if p not in known]
    if unknown or not names:
        raise BenchError(f"unknown policy {unknown or spec!r}; registered: {', '.join(known)} or 'all'")
    return names


def scenario_spec(scenario: Scenario) -> RunSpec:
    """The run settings a scenario implies."""

    s = scenario.slo
    return RunSpec(
        model=scenario.model,
        tp=scenario.tp,
        slo=SLO(ttft_ms=s.ttft_ms, itl_ms=s.itl_ms, quantile=s.quantile),
        tick_s=scenario.tick_s,
        cold_start_s=scenario.cold_start_s,
        max_replicas=scenario.max_replicas,
        budget_gpus=scenario.budget_gpus,
        slowdown=scenario.slowdown,
        forecaster=scenario.forecaster,
        policy_params=scenario.policy_params,
        hardware_file=scenario.hardware,
    )


def static_split(scenario: Scenario, trace: Any, spec: RunSpec) -> dict[str, int]:
    """The scenario's static split: from the file, else the planner's smallest split meeting the target; under
    a budget, the planner's split cut to the budget (each pool keeps the largest share of its need)."""
    if scenario.static is not None:
        return {"prefill": scenario.static.prefill, "decode": scenario.static.decode}

    found = search_static_split(trace, spec, scenario.attainment_target)
    sizes = dict(found.sizes)
    if spec.budget_gpus is not None and sum(sizes.values()) * spec.tp > spec.budget_gpus:
        sizes = split_budget(sizes, {r: pool_spec(spec, r) for r in sizes}, spec.budget_gpus)
    log.info("bench_static_split", scenario=scenario.name, sizes=sizes, met=found.met)
    return sizes


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One cell of the grid; self-contained so it can travel to a Ray worker."""

    scenario: Scenario
    policy: str
    initial: Mapping[str, int] | None
    """Replicas per pool at t=0; None for ``static`` without a recorded split (the run plans it first)."""


def run_request(req: RunRequest) -> RunOutcome:
    """Rebuild the scenario's trace (deterministic for its seed) and run the policy."""
    trace = build_trace(req.scenario)
    spec = scenario_spec(req.scenario)
    initial = req.initial if req.initial is not None else static_split(req.scenario, trace, spec)
    past = req.policy not in ("static", *YARDSTICKS)  # what a deployed policy's daemon reads back at start-up
    backfill = history_backfill(build_history(req.scenario), spec) if past else None
    return run_policy(trace, spec, req.policy, initial, backfill)


def simulate_scenario(scenario: Scenario, policy: str, on_tick: Callable[[float, Any], None] | None = None) -> Any:
    """One policy on one scenario, exactly as its bench cell runs it; returns the ``simulator.SimResult``.

    ``pdscale simulate --scenario`` uses it, so a scenario file means the same thing to both commands."""

    parse_policies(policy)
    trace = build_trace(scenario)
    spec = scenario_spec(scenario)
    initial = static_split(scenario, trace, spec) if policy == "static" else warm_start(trace, spec)
    backfill = history_backfill(build_history(scenario), spec)
    return simulate_policy(trace, spec, policy, initial, on_tick=on_tick, backfill=backfill)


def infeasibility(scenario: Scenario) -> str | None:
    """What share of the scenario's requests no fleet of its true hardware serves within the SLO, said up
    front (None when every request can): e.g. "TTFT 1 s cannot be met for 45% of these prompts on any fleet"."""

    spec = scenario_spec(scenario)
    found = feasibility(hardware_perf(spec), build_trace(scenario), spec.slo.ttft_ms, spec.slo.itl_ms)
    return found.summary(spec.slo.ttft_ms, spec.slo.itl_ms) if found.infeasible else None


def _requests(scenarios: Sequence[Scenario], policies: Sequence[str]) -> list[RunRequest]:
    out = []
    for sc in scenarios:
        trace = build_trace(sc)
        spec = scenario_spec(sc)
        warm = warm_start(trace, spec)
        static = None if sc.static is None else {"prefill": sc.static.prefill, "decode": sc.static.decode}
        for pol in policies:
            out.append(RunRequest(sc, pol, static if pol == "static" else warm))
    return out


def _failed(req: RunRequest, exc: BaseException) -> RunOutcome:
    """The outcome of a run that raised: a row that says why, and an empty timeline."""

    log.error("bench_run_failed", scenario=req.scenario.name, policy=req.policy, error=f"{type(exc).__name__}: {exc}")
    empty = np.zeros(0)
    timeline = Timeline(
        empty, empty, empty, {}, {}, {}, empty, empty, req.scenario.slo.ttft_ms, req.scenario.slo.itl_ms
    )
    row: dict[str, Any] = {"policy": req.policy, "gpu_hours": None, "slo_attainment": None, "wall_s": None}
    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return RunOutcome(row=row, timeline=timeline)


def _safe_run(req: RunRequest) -> RunOutcome:
    try:
        return run_request(req)
    except Exception as exc:  # one failing run is reported in its row, the grid goes on
        return _failed(req, exc)


def _cost(req: RunRequest) -> float:
    """Rough relative run time: simulated seconds, x5 for runs that fit the ensemble forecaster every tick."""

    heavy = uses_forecasts(req.policy) and req.scenario.forecaster == "ensemble"
    return req.scenario.traffic.duration_s * (5.0 if heavy else 1.0)


def _remote_run(req: RunRequest) -> RunOutcome:
    """A Ray task: quiet logging in the worker, then one run."""

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return run_request(req)


def _ray_map(requests: Sequence[RunRequest], on_done: Callable[[RunRequest, RunOutcome], None]) -> list[RunOutcome]:
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise BenchError(
            "--parallel needs Ray: pip install 'pdscale[ray]' (or run without --parallel for sequential runs)"
        ) from None
    if not ray.is_initialized():
        # A fresh local instance unless RAY_ADDRESS names a cluster: plain ray.init() would join any head
        # found on this machine, even a stale one.
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    remote = ray.remote(num_cpus=1)(_remote_run)
    order = sorted(range(len(requests)), key=lambda i: -_cost(requests[i]))  # longest first: less idle at the end
    refs = {remote.remote(requests[i]): i for i in order}
    results: dict[int, RunOutcome] = {}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            i = refs[ref]
            try:
                results[i] = ray.get(ref)
            except Exception as exc:  # a failed task (or worker) is reported in its row
                results[i] = _failed(requests[i], exc)
            on_done(requests[i], results[i])
    return [results[i] for i in range(len(requests))]


def run_grid(
    scenarios: Sequence[Scenario],
    policies: Sequence[str],
    *,
    parallel: bool = False,
    on_done: Callable[[RunRequest, RunOutcome], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[tuple[RunRequest, RunOutcome]]:
    """Run every policy on every scenario; each row gets ``scenario``, ``x_oracle`` and ``x_hindsight`` (its
    GPU-hours over that yardstick's on the same scenario; None without that yardstick's run).

    ``on_progress(done, total)`` is called with ``(0, total)`` before the first run and after each one."""
    started = time.perf_counter()
    requests = _requests(scenarios, policies)
    total = len(requests)
    finished = 0
    if on_progress is not None:
        on_progress(0, total)

    def notify(req: RunRequest, out: RunOutcome) -> None:
        nonlocal finished
        finished += 1
        if on_done is not None:
            on_done(req, out)
        if on_progress is not None:
            on_progress(finished, total)

    if parallel:
        outcomes = _ray_map(requests, notify)
    else:
        outcomes = []
        for req in requests:
            outcomes.append(_safe_run(req))
            notify(req, outcomes[-1])
    bases = {
        (req.policy, req.scenario.name): out.row["gpu_hours"]
        for req, out in zip(requests, outcomes, strict=True)
        if req.policy in YARDSTICKS
    }
    for req, out in zip(requests, outcomes, strict=True):
        out.row["scenario"] = req.scenario.name
        gpu_h = out.row.get("gpu_hours")
        for yardstick in YARDSTICKS:
            base = bases.get((yardstick, req.scenario.name))
            out.row[f"x_{yardstick}"] = gpu_h / base if base and gpu_h is not None else None
        out.row["attainment_target"] = req.scenario.attainment_target
    log.info("bench_finished", runs=len(requests), wall_s=round(time.perf_counter() - started, 1))
    return list(zip(requests, outcomes, strict=True))
