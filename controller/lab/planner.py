"""Capacity planning on a trace: the smallest static split that meets the SLO, the autoscaled cost, the
colocated fleet for the same SLO, and whether disaggregation pays.

    plan = make_plan(trace, spec, attainment_target=0.99, gpu_hour_usd=2.5)
    plan.to_json()

Searches start from the capacity model's answer for the trace's peak demand (hindsight, binned per tick) and
are verified and refined in the simulator: a size *meets* when the simulated SLO attainment (share of all
requests with TTFT and mean ITL within target, drops counted as misses) reaches the target. Disaggregated
splits grow the pool whose growth helps most until the target is met, then shrink each pool while it still is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import structlog

from pdscale.controller.lab.bench_run import (
    RunOutcome,
    RunSpec,
    hardware_capacity,
    oracle_demand_for,
    pool_spec,
    run_policy,
    simulate_static,
    timeline_of,
    warm_start,
)

__all__ = [
    "COLOCATED_TOKEN_BUDGETS",
    "Evaluation",
    "Flag",
    "Plan",
    "SearchResult",
    "make_plan",
    "model_estimate",
    "search_colocated",
    "search_static_split",
    "short_prompt_share",
    "static_timeline",
]

log = structlog.get_logger(__name__)

SHORT_PROMPT_TOKENS = 512
SHORT_PROMPT_SHARE = 0.5
SMALL_FLEET_GPUS = 12
HIGH_PREFIX_REUSE = 0.5
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One simulated static fleet. ``attainment`` is over the *feasible* requests (those some fleet can serve
    within the SLO, ``pdscale.simulator.feasibility``): the planner never buys GPUs chasing the others.
    ``attainment_all`` is over every request."""

    sizes: dict[str, int]
    gpus: int
    attainment: float
    ttft_attainment: float
    itl_attainment: float
    gpu_hours: float
    ttft_p99_ms: float | None
    itl_p99_ms: float | None
    attainment_all: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "sizes": dict(self.sizes),
            "gpus": self.gpus,
            "attainment": self.attainment,
            "attainment_all": self.attainment_all,
            "ttft_attainment": self.ttft_attainment,
            "itl_attainment": self.itl_attainment,
            "gpu_hours": self.gpu_hours,
            "ttft_p99_ms": self.ttft_p99_ms,
            "itl_p99_ms": self.itl_p99_ms,
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The smallest fleet found (``met`` False: the best one at the search's limit), with every evaluation."""

    sizes: dict[str, int]
    gpus: int
    met: bool
    estimate: dict[str, int]
    evaluations: tuple[Evaluation, ...]
    best: Evaluation
    result: Any = field(repr=False, default=None)
    token_budget: int | None = None
    """Colocated searches: the chunk size (prompt tokens per iteration) of the chosen fleet."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (without the raw simulator result)."""
        return {
            "sizes": dict(self.sizes),
            "gpus": self.gpus,
            "met": self.met,
            "model_estimate": dict(self.estimate),
            "token_budget": self.token_budget,
            "attainment": self.best.attainment,
            "gpu_hours": self.best.gpu_hours,
            "ttft_p99_ms": self.best.ttft_p99_ms,
            "itl_p99_ms": self.best.itl_p99_ms,
            "evaluations": [e.to_json() for e in self.evaluations],
        }


@dataclass(frozen=True, slots=True)
class Flag:
    """A case where disaggregation may not pay, found in the data."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything ``pdscale plan`` reports."""

    trace_name: str
    requests: int
    duration_h: float
    spec: RunSpec
    attainment_target: float
    gpu_hour_usd: float | None
    short_prompt_share: float
    prefix_reuse: float | None
    static: SearchResult
    colocated: SearchResult
    autoscaled: RunOutcome | None
    flags: tuple[Flag, ...]

    def savings(self) -> dict[str, Any]:
        """GPU-hours (and dollars) of each option and what disaggregation and autoscaling save."""
        static_h = self.static.best.gpu_hours
        coloc_h = self.colocated.best.gpu_hours
        auto_h = float(self.autoscaled.row["gpu_hours"]) if self.autoscaled is not None else None
        out: dict[str, Any] = {
            "colocated_gpu_hours": coloc_h,
            "static_disagg_gpu_hours": static_h,
            "autoscaled_gpu_hours": auto_h,
            "disagg_vs_colocated_gpu_hours": coloc_h - static_h,
            "autoscaled_vs_static_gpu_hours": None if auto_h is None else static_h - auto_h,
            "autoscaled_vs_colocated_gpu_hours": None if auto_h is None else coloc_h - auto_h,
        }
        month = HOURS_PER_MONTH / self.duration_h if self.duration_h > 0 else math.nan
        if self.gpu_hour_usd is not None:
            usd = {
                k.replace("gpu_hours", "usd"): (None if v is None else v * self.gpu_hour_usd) for k, v in out.items()
            }
            out.update(usd)
            out.update(
                {
                    k.replace("_usd", "_usd_per_month"): (None if v is None else v * month)
                    for k, v in usd.items()
                    if k.endswith("_usd")
                }
            )
        return out

    def disaggregation_pays(self) -> bool:
        """Whether the disaggregated fleet meets the SLO with fewer GPU-hours than colocated serving and no flag
        says otherwise."""
        cheaper = self.static.met and (
            not self.colocated.met or self.static.best.gpu_hours < self.colocated.best.gpu_hours
        )
        return cheaper and not self.flags

    def to_json(self) -> dict[str, Any]:
        """The plan as one JSON object."""
        return {
            "trace": self.trace_name,
            "requests": self.requests,
            "duration_h": self.duration_h,
            "model": self.spec.model,
            "tp": self.spec.tp,
            "slo": {"ttft_ms": self.spec.slo.ttft_ms, "itl_ms": self.spec.slo.itl_ms},
            "attainment_target": self.attainment_target,
            "gpu_hour_usd": self.gpu_hour_usd,
            "short_prompt_share": self.short_prompt_share,
            "prefix_reuse": self.prefix_reuse,
            "static_split": self.static.to_json(),
            "colocated": self.colocated.to_json(),
            "autoscaled": None if self.autoscaled is None else self.autoscaled.row,
            "savings": self.savings(),
            "disaggregation_pays": self.disaggregation_pays(),
            "flags": [{"code": f.code, "message": f.message} for f in self.flags],
        }


def short_prompt_share(trace: Any, tokens: int = SHORT_PROMPT_TOKENS) -> float:
    """Share of prompts shorter than ``tokens``."""
    return float(np.mean(np.asarray(trace.input_tokens) < tokens)) if len(trace.input_tokens) else 0.0


def model_estimate(trace: Any, spec: RunSpec) -> dict[str, int]:
    """Replicas per pool the capacity model gives for the trace's peak binned demand (the search's start)."""

    model = hardware_capacity(spec)
    demand = oracle_demand_for(trace, spec)
    end = float(trace.arrival_s[-1]) + spec.tick_s if len(trace.arrival_s) else spec.tick_s
    out: dict[str, int] = {}
    for role in spec.roles():
        pool = pool_spec(spec, role)
        peak = demand.peak(role, 0.0, end)
        w = demand.workload(0.0, end, model.workload({}))
        need = model.replicas_needed(pool, peak, spec.slo, workload=w).replicas
        out[role] = max(1, min(need, 10_000))
    return out


def _evaluate(trace: Any, spec: RunSpec, sizes: Mapping[str, int]) -> tuple[Evaluation, Any]:
    res = simulate_static(trace, spec, sizes)
    summary = res.to_json()
    done = ~np.isnan(res.finish_s)
    n = max(1, len(res.finish_s))
    ttft_ok = done & (res.ttft_s * 1000.0 <= spec.slo.ttft_ms)
    itl_ok = done & (np.isnan(res.itl_s) | (res.itl_s * 1000.0 <= spec.slo.itl_ms))
    ev = Evaluation(
        sizes=dict(sizes),
        gpus=sum(sizes.values()) * spec.tp,
        attainment=float(summary["slo_attainment_feasible"] or 0.0),
        attainment_all=float(summary["slo_attainment"] or 0.0),
        ttft_attainment=float(np.count_nonzero(ttft_ok)) / n,
        itl_attainment=float(np.count_nonzero(itl_ok)) / n,
        gpu_hours=float(summary["gpu_hours"]),
        ttft_p99_ms=summary["ttft_p99_ms"],
        itl_p99_ms=summary["itl_p99_ms"],
    )
    log.info("plan_evaluated", sizes=dict(sizes), attainment=round(ev.attainment, 4), gpus=ev.gpus)
    return ev, res


class _Evaluator:
    """Memoised simulator runs, bounded by ``max_evals``."""

    def __init__(self, trace: Any, spec: RunSpec, max_evals: int) -> None:
        self.trace, self.spec, self.max_evals = trace, spec, max_evals
        self.done: dict[tuple[int, ...], tuple[Evaluation, Any]] = {}
        self.order: list[Evaluation] = []

    def __call__(self, sizes: Mapping[str, int]) -> Evaluation | None:
        key = tuple(sizes[r] for r in self.spec.roles())
        if key not in self.done:
            if len(self.done) >= self.max_evals:
                return None
            self.done[key] = _evaluate(self.trace, self.spec, sizes)
            self.order.append(self.done[key][0])
        return self.done[key][0]

    def result(self, ev: Evaluation) -> Any:
        return self.done[tuple(ev.sizes[r] for r in self.spec.roles())][1]


def _finish(evaluate: _Evaluator, estimate: dict[str, int], target: float) -> SearchResult:
    met = [e for e in evaluate.order if e.attainment >= target]
    if met:
        best = min(met, key=lambda e: (e.gpus, -e.attainment))
    else:
        best = max(evaluate.order, key=lambda e: (e.attainment, -e.gpus))
    return SearchResult(
        sizes=dict(best.sizes),
        gpus=best.gpus,
        met=bool(met),
        estimate=estimate,
        evaluations=tuple(evaluate.order),
        best=best,
        result=evaluate.result(best),
    )


def search_static_split(
    trace: Any, spec: RunSpec, target: float, *, max_evals: int = 30, start: Mapping[str, int] | None = None
) -> SearchResult:
    """The smallest disaggregated (prefill, decode) fleet whose simulated attainment reaches ``target``."""
    if spec.mode != "disagg":
        raise ValueError("search_static_split needs a disagg RunSpec")
    estimate = dict(start) if start is not None else model_estimate(trace, spec)
    evaluate = _Evaluator(trace, spec, max_evals)
    cap = spec.max_replicas
    sizes = {r: max(1, min(cap, estimate[r])) for r in spec.roles()}
    ev = evaluate(sizes)
    while ev is not None and ev.attainment < target:  # grow the pool whose growth helps most
        options = [{**sizes, r: sizes[r] + 1} for r in spec.roles() if sizes[r] < cap]
        if ev.itl_attainment < target and sizes["decode"] < cap:
            options = [{**sizes, "decode": sizes["decode"] + 1}]
        tried = [(e, o) for o in options if (e := evaluate(o)) is not None]
        if not tried:
            break
        ev, sizes = max(tried, key=lambda eo: eo[0].attainment)
    if ev is not None and ev.attainment >= target:
        shrunk = True
        while shrunk:  # shrink each pool while the target still holds
            shrunk = False
            for r in spec.roles():
                if sizes[r] <= 1:
                    continue
                trial = {**sizes, r: sizes[r] - 1}
                e = evaluate(trial)
                if e is not None and e.attainment >= target:
                    sizes, shrunk = trial, True
    return _finish(evaluate, estimate, target)


COLOCATED_TOKEN_BUDGETS: tuple[int, ...] = (2048, 1024, 512, 256, 128)
"""Chunk sizes (prompt tokens per colocated iteration) the colocated search tries: a tight ITL target needs
small chunks, which in turn lengthen TTFT."""


def _replace(spec: RunSpec, **changes: Any) -> RunSpec:
    return RunSpec(**{**{f: getattr(spec, f) for f in spec.__dataclass_fields__}, **changes})


def _bisect_fleet(evaluate: _Evaluator, n: int, cap: int, target: float) -> None:
    """Evaluate colocated sizes until the smallest meeting one is pinned (attainment taken as non-decreasing)."""

    def meets(k: int) -> bool | None:
        e = evaluate({"colocated": k})
        return None if e is None else e.attainment >= target

    lo, hi = 0, 0  # lo: largest size seen to fail (0 always does); hi: smallest seen to meet (0: none yet)
    ok = meets(n)
    while ok is False and n < cap:  # grow by half until the target is met
        lo, n = n, min(cap, max(n + 1, math.ceil(n * 1.5)))
        ok = meets(n)
    if ok:
        hi = n
    while ok and lo == 0 and hi > 1:  # met at the first try: halve until a size fails
        k = hi // 2
        ok = meets(k)
        if ok:
            hi = k
        elif ok is False:
            lo = k
    while hi - lo > 1 and hi > 0:  # bisect between a failing and a meeting size
        mid = (lo + hi) // 2
        res = meets(mid)
        if res is None:
            break
        lo, hi = (lo, mid) if res else (mid, hi)


def search_colocated(
    trace: Any,
    spec: RunSpec,
    target: float,
    *,
    max_evals: int = 16,
    start: int | None = None,
    probe: int | None = None,
    budgets: tuple[int, ...] = COLOCATED_TOKEN_BUDGETS,
) -> SearchResult:
    """The smallest colocated fleet whose simulated attainment reaches ``target``, over chunk sizes.

    Each chunk size in ``budgets`` is first probed at a generous fleet (``probe``, default the cap); sizes
    whose probe misses the target are skipped (the ITL target is out of reach at that chunk), the others are
    searched by bisection. Returns the fewest GPUs found (ties: the larger chunk), or the best probe when
    none meets.
    """
    cspec = _replace(spec, mode="colocated")
    estimate = {"colocated": start} if start is not None else model_estimate(trace, cspec)
    cap = cspec.max_replicas
    n0 = max(1, min(cap, estimate["colocated"]))
    probe_n = max(n0, min(cap, probe if probe is not None else cap))
    results: list[SearchResult] = []
    for budget in budgets:
        bspec = _replace(cspec, colocated_token_budget=budget)
        evaluate = _Evaluator(trace, bspec, max_evals)
        first = evaluate({"colocated": probe_n})
        if first is not None and first.attainment >= target:
            _bisect_fleet(evaluate, n0, probe_n, target)
        found = replace(_finish(evaluate, estimate, target), token_budget=budget)
        results.append(found)
        log.info("plan_colocated_budget", token_budget=budget, met=found.met, gpus=found.gpus)
    met = [r for r in results if r.met]
    if met:
        return min(met, key=lambda r: r.gpus)
    return max(results, key=lambda r: r.best.attainment)


def _flags(
    plan_static: SearchResult, plan_coloc: SearchResult, short_share: float, prefix_reuse: float | None
) -> tuple[Flag, ...]:
    flags: list[Flag] = []
    if short_share >= SHORT_PROMPT_SHARE:
        flags.append(
            Flag(
                "short_prompts",
                f"{short_share:.0%} of prompts are under {SHORT_PROMPT_TOKENS} tokens: prefill is cheap and chunked "
                "prefill in a colocated fleet barely disturbs decode, so a separate prefill pool gains little",
            )
        )
    if plan_static.gpus < SMALL_FLEET_GPUS:
        flags.append(
            Flag(
                "small_fleet",
                f"the disaggregated fleet is {plan_static.gpus} GPUs (under ~{SMALL_FLEET_GPUS}): two pools each need "
                "their own spare replica, which costs more than the interference disaggregation removes",
            )
        )
    if prefix_reuse is not None and prefix_reuse >= HIGH_PREFIX_REUSE:
        flags.append(
            Flag(
                "high_prefix_reuse",
                f"prefix reuse {prefix_reuse:.0%}: a prefix cache skips that share of prefill work, which favours "
                "colocated serving (the simulator does not model prefix caching, so the prefill pool here is "
                "sized for the full prompts)",
            )
        )
    if plan_coloc.met and plan_static.met and plan_coloc.best.gpu_hours <= plan_static.best.gpu_hours:
        flags.append(
            Flag(
                "colocated_not_worse",
                f"colocated serving meets the SLO with {plan_coloc.gpus} GPUs, no more than the "
                f"{plan_static.gpus} of the disaggregated split",
            )
        )
    return tuple(flags)


def make_plan(
    trace: Any,
    spec: RunSpec,
    *,
    attainment_target: float = 0.99,
    gpu_hour_usd: float | None = None,
    prefix_reuse: float | None = None,
    autoscale: bool = True,
    max_evals: int = 30,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """Search the static split and the colocated fleet, replay the slo policy, and flag where disaggregation
    does not pay."""
    if not 0.0 < attainment_target <= 1.0:
        raise ValueError(f"attainment target must be in (0, 1], got {attainment_target}")
    if prefix_reuse is not None and not 0.0 <= prefix_reuse <= 1.0:
        raise ValueError(f"prefix reuse must be in [0, 1], got {prefix_reuse}")
    if len(trace.arrival_s) == 0:
        raise ValueError(f"{trace.name}: the trace has no requests")
    say = progress or (lambda _msg: None)
    say("searching the static disaggregated split")
    static = search_static_split(trace, spec, attainment_target, max_evals=max_evals)
    say("searching the colocated fleet")
    coloc_cap = max(spec.max_replicas, 3 * sum(static.sizes.values()))
    probe = 2 * sum(static.sizes.values())
    coloc = search_colocated(trace, _replace(spec, max_replicas=coloc_cap), attainment_target, probe=probe)
    auto = None
    if autoscale:
        say("replaying the slo policy")
        auto = run_policy(trace, spec, "slo", warm_start(trace, spec))
    short = short_prompt_share(trace)
    end = float(trace.arrival_s[-1]) - float(trace.arrival_s[0])
    return Plan(
        trace_name=str(trace.name),
        requests=len(trace.arrival_s),
        duration_h=max(end, 0.0) / 3600.0,
        spec=spec,
        attainment_target=attainment_target,
        gpu_hour_usd=gpu_hour_usd,
        short_prompt_share=short,
        prefix_reuse=prefix_reuse,
        static=static,
        colocated=coloc,
        autoscaled=auto,
        flags=_flags(static, coloc, short, prefix_reuse),
    )


def static_timeline(result: SearchResult) -> Any:
    """The timeline of a search's chosen fleet."""
    return timeline_of(result.result)
