"""What ``pdscale demo`` reports at the end: the run window's figures against the SLO, and the best static split
on the same requests as the baseline.

    window = close_window(cluster, end_s)                     # no request arrives after end_s
    baseline = best_static_split(settings, window.trace)       # simulated now, on those same requests
    story = demo_story(settings, window, baseline)             # JSON-ready; story["verdict"] says what it saved

Every figure is exact over the requests that arrived in the controlled window (percentiles from the per-request
samples, never from histogram buckets); GPU-hours are paid until the last of those requests finished.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pdscale.controller.lab.bench_run import RunSpec, timeline_of
from pdscale.controller.lab.planner import search_colocated, search_static_split
from pdscale.simulator import SimResult
from pdscale.simulator.traces import Trace

__all__ = ["Baseline", "RunWindow", "best_static_split", "close_window", "demo_story", "window_latency"]


@dataclass(frozen=True, slots=True)
class RunWindow:
    """The controlled window of a demo: requests that arrived in ``[0, end_s]`` and their outcome."""

    end_s: float
    trace: Trace
    result: SimResult


@dataclass(frozen=True, slots=True)
class Baseline:
    """The smallest static (prefill, decode) split meeting the attainment target on the window's requests
    (``met`` False: none within max_replicas did; the best one found), or why there is none (``skipped``)."""

    sizes: dict[str, int]
    gpus: int
    met: bool
    evaluations: int
    wall_s: float
    summary: dict[str, Any]
    skipped: str = ""


def close_window(cluster: Any, end_s: float) -> RunWindow:
    """Advance the cluster to ``end_s``, let no later request arrive, run what arrived to completion."""
    cluster.advance_to(max(end_s, cluster.now_s))
    arrived = cluster.close_arrivals()
    result = cluster.finish().first(arrived)
    tr = cluster.trace
    trace = Trace(
        np.asarray(tr.arrival_s[:arrived], dtype=np.float64),
        np.asarray(tr.input_tokens[:arrived], dtype=np.int64),
        np.asarray(tr.output_tokens[:arrived], dtype=np.int64),
        f"{tr.name}[0:{end_s:g}]",
    )
    return RunWindow(end_s=end_s, trace=trace, result=result)


def _no_baseline(why: str) -> Baseline:
    return Baseline(sizes={}, gpus=0, met=False, evaluations=0, wall_s=0.0, summary={}, skipped=why)


def best_static_split(settings: Any, trace: Trace, *, colocated: bool = False, max_evals: int = 30) -> Baseline:
    """Search static fleets in the simulator on ``trace`` (the planner's searches, ``pdscale plan``): the smallest
    prefill/decode split (``colocated``: the smallest colocated fleet, over chunk sizes) whose attainment over the
    feasible requests reaches ``settings.slo.quantile``."""
    sim = settings.simulator
    if sim.mode != "disagg":
        return _no_baseline("the baseline is a static prefill/decode split; this run is colocated")
    if sim.params:
        return _no_baseline("simulator.params are set; the planner's static runs would not use them")
    if not len(trace):
        return _no_baseline("no request arrived in the window")
    pools = settings.pools
    spec = RunSpec(
        model=settings.model,
        tp=pools[0].gpus_per_replica,
        slo=settings.slo.to_slo(),
        tick_s=settings.tick_s,
        cold_start_s=max(p.cold_start_s for p in pools),
        max_replicas=max(p.max_replicas for p in pools),
        budget_gpus=settings.budget.max_gpus,
        slowdown=sim.slowdown,
        mode="colocated" if colocated else "disagg",
    )
    started = time.perf_counter()
    target = settings.slo.quantile
    found = (
        search_colocated(trace, spec, target)
        if colocated
        else search_static_split(trace, spec, target, max_evals=max_evals)
    )
    return Baseline(
        sizes=dict(found.sizes),
        gpus=found.gpus,
        met=found.met,
        evaluations=len(found.evaluations),
        wall_s=time.perf_counter() - started,
        summary=found.result.to_json(),
    )


def _figures(s: dict[str, Any]) -> dict[str, Any]:
    keys = ("requests", "completed", "dropped", "slo_attainment", "slo_attainment_feasible", "ttft_p99_ms",
            "itl_p99_ms", "gpu_hours", "prefill_gpu_hours", "decode_gpu_hours", "colocated_gpu_hours",
            "scale_actions")  # fmt: skip
    return {k: s.get(k) for k in keys}


def _baseline_entry(kind: str, fleets: str, b: Baseline, figures: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "source": f"computed now: {b.evaluations} {fleets} fleets simulated on the same requests",
        "sizes": dict(b.sizes),
        "gpus": b.gpus,
        "met_target": b.met,
        "wall_s": round(b.wall_s, 1),
        **figures,
    }


def demo_story(
    settings: Any, window: RunWindow, baseline: Baseline, colocated: Baseline | None = None
) -> dict[str, Any]:
    """The summary: SLO targets, the run's figures, the baselines', what autoscaling saved against the best static
    split and what disaggregation saved against the best colocated fleet (JSON-ready)."""
    slo = settings.slo
    run = _figures(window.result.to_json())
    story: dict[str, Any] = {
        "slo": {"ttft_p99_ms": slo.ttft_ms, "itl_p99_ms": slo.itl_ms, "attainment_target": slo.quantile},
        "window_s": window.end_s,
        "run": run,
        "met_target": (run["slo_attainment"] or 0.0) >= slo.quantile,
    }
    if baseline.skipped:
        story["baseline"] = {"skipped": baseline.skipped}
        story["verdict"] = f"no baseline: {baseline.skipped}"
        return story
    base = _figures(baseline.summary)
    story["baseline"] = _baseline_entry("best static split", "static", baseline, base)
    saved = float(base["gpu_hours"]) - float(run["gpu_hours"])
    pct = 100.0 * saved / float(base["gpu_hours"]) if base["gpu_hours"] else math.nan
    story["saved_gpu_hours"] = saved
    story["saved_pct"] = pct
    story["verdict"] = _verdict(story, saved, pct)
    if colocated is not None and not colocated.skipped:
        col = _figures(colocated.summary)
        story["colocated"] = _baseline_entry("best colocated fleet", "colocated", colocated, col)
        d_saved = float(col["gpu_hours"]) - float(base["gpu_hours"])
        d_pct = 100.0 * d_saved / float(col["gpu_hours"]) if col["gpu_hours"] else math.nan
        story["disagg_saved_gpu_hours"] = d_saved
        story["disagg_saved_pct"] = d_pct
        n = colocated.sizes.get("colocated", 0)
        what = f"saved {d_saved:,.2f} GPU-hours ({d_pct:.1f}%)" if d_saved >= 0 else f"cost {-d_saved:,.2f} more"
        story["verdict"] += (
            f"; disaggregation {what}: the best static split against the best colocated fleet "
            f"({n} replicas, {colocated.gpus} GPUs{'' if colocated.met else ', missing the target'})"
        )
    return story


def _verdict(story: dict[str, Any], saved: float, pct: float) -> str:
    target = story["slo"]["attainment_target"]
    run, base = story["run"], story["baseline"]
    split = " + ".join(f"{n} {role}" for role, n in base["sizes"].items())
    cost = (
        f"autoscaling saved {saved:,.2f} GPU-hours ({pct:.1f}%)"
        if saved >= 0
        else f"autoscaling cost {-saved:,.2f} GPU-hours more ({-pct:.1f}%)"
    )
    head = f"{cost} against the best static split ({split} replicas, {base['gpus']} GPUs, picked in hindsight)"
    notes = []
    if not story["met_target"]:
        notes.append(f"this run missed the {100 * target:g}% target ({100 * (run['slo_attainment'] or 0):.2f}%)")
    if not base["met_target"]:
        notes.append("no static split within max_replicas met the target")
    return head + ("; " + "; ".join(notes) if notes else "")


def window_latency(result: SimResult, end_s: float) -> dict[str, Any]:
    """Per sample interval up to ``end_s``: p99 TTFT and p99 per-request mean ITL of the requests that finished in
    it, computed exactly from the per-request samples (minutes, ms)."""
    tl = timeline_of(result)
    keep = tl.t_s <= end_s + 1e-9
    return {
        "t_min": (tl.t_s[keep] / 60.0).tolist(),
        "ttft_p99_ms": tl.ttft_p99_ms[keep].tolist(),
        "itl_p99_ms": tl.itl_p99_ms[keep].tolist(),
    }
