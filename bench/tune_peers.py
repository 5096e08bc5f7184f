"""Tune the peers (``keda``, ``dynamo-like``) to the attainment target, then compare their GPU-hours with ``slo``.

    python bench/tune_peers.py --out DIR                         # the six hour-scale scenarios
    python bench/tune_peers.py --out DIR --scenarios retail-day --keda-windows 3600 --dynamo-intervals 180

For every scenario (a bundled file) and peer, a small search finds the cheapest knob setting that reaches the
scenario's attainment target (99%), or the best attainment it reaches when none does:

- ``keda``: one scale ``s`` over both triggers' targets, ``prefill_queue_s = 2 s x s`` and ``kv_threshold =
  calibrated x s`` (the calibrated threshold is the one the policy computes itself from the profile, at the
  trace's mean prompt / output length); ``s`` walks down a ladder until the target is met (smaller targets buy
  more replicas), for a scale-down window of 300 s (the HPA's default), 1,200 s and 3,600 s (the longest
  ``stabilizationWindowSeconds`` Kubernetes accepts). Where a rung meets the target, each trigger alone is
  relaxed back one rung, in case only one role needed the extra room. Where the first rung (the defaults)
  already meets the target, ``s`` walks up instead (1.4, 2, 2.8, 4) to find a cheaper setting that still does.
- ``dynamo-like``: its floor ``min_endpoint`` (replicas every pool keeps), bisected for the smallest that meets
  the target, at adjustment intervals of 180 s (Dynamo's default) and 60 s.

``slo`` runs once per scenario, with the scenario's own parameters but ``forecaster: last_value``. Every run is
exactly the bench's cell (same trace, warm start, guards). The winning knobs are written as scenario copies
into ``--out`` (``forecaster: last_value``, the peers' ``policy_params`` set), so one command reproduces a
scenario's three rows::

    pdscale bench --scenario-dir OUT --scenarios NAME --policies keda,dynamo-like,slo

Prints one line per run (to stderr) and a Markdown table: scenario, peer, knobs, attainment, GPU-hours, and
``slo``'s figures beside them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pdscale.controller.core.capacity import ProfileCapacityModel, Workload
from pdscale.controller.lab.bench import scenario_spec
from pdscale.controller.lab.bench_run import run_policy, warm_start
from pdscale.controller.lab.scenario import SCENARIO_DIR, Scenario, build_trace, load_scenario
from pdscale.controller.runtime.logconfig import configure_logging
from pdscale.controller.runtime.profile import load_profile

FAST = ("chat-hour", "code-burst", "step-3x", "gap", "reasoning", "long-prompts")
KEDA_LADDER = (1.0, 0.7, 0.5, 0.35, 0.25)
KEDA_WINDOWS_S = (300.0, 1200.0, 3600.0)
KEDA_UP = (1.4, 2.0, 2.8, 4.0)
"""Where the first rung already meets the target: larger targets (fewer replicas) walked up until it fails."""
DYNAMO_INTERVALS_S = (180.0, 60.0)


@dataclass(frozen=True)
class Result:
    """One run: the knobs it used and what it paid and delivered."""

    knobs: dict[str, Any]
    attainment: float
    feasible_attainment: float
    gpu_hours: float
    ttft_p99_ms: float
    itl_p99_ms: float


class Runner:
    """Runs one scenario's cells with any policy params, sharing the trace and warm start between runs."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario.model_copy(update={"forecaster": "last_value"})
        self.trace = build_trace(self.scenario)
        spec = scenario_spec(self.scenario)
        self.initial = warm_start(self.trace, spec)
        self.runs = 0

    def run(self, policy: str, knobs: Mapping[str, Any]) -> Result:
        """Replay the scenario under ``policy`` with ``knobs`` merged over its file's params for it."""
        params = {k: dict(v) for k, v in self.scenario.policy_params.items()}
        params[policy] = {**params.get(policy, {}), **knobs}
        spec = scenario_spec(self.scenario.model_copy(update={"policy_params": params}))
        row = run_policy(self.trace, spec, policy, self.initial).row
        self.runs += 1
        res = Result(
            dict(knobs),
            float(row["slo_attainment"]),
            float(row["slo_attainment_feasible"]),
            float(row["gpu_hours"]),
            float(row["ttft_p99_ms"]),
            float(row["itl_p99_ms"]),
        )
        print(
            f"  {self.scenario.name:14} {policy:12} {_fmt(res.knobs):58} "
            f"attainment {res.attainment:.4f} GPU-h {res.gpu_hours:.1f} "
            f"TTFT p99 {res.ttft_p99_ms:,.0f} ms ITL p99 {res.itl_p99_ms:.1f} ms",
            file=sys.stderr,
            flush=True,
        )
        return res


def _fmt(knobs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in knobs.items()) or "defaults"


def _pick(results: list[Result], target: float) -> Result:
    """The cheapest result that meets ``target``; else the one with the best attainment (cheapest on ties)."""
    met = [r for r in results if r.attainment >= target]
    if met:
        return min(met, key=lambda r: r.gpu_hours)
    return max(results, key=lambda r: (r.attainment, -r.gpu_hours))


def calibrated_kv_threshold(scenario: Scenario, trace: Any) -> float:
    """The KV threshold ``keda`` calibrates itself (its ``kv_threshold: 0``), at the trace's mean lengths."""
    model = ProfileCapacityModel(load_profile(f"builtin:{scenario.model}/tp{scenario.tp}"))
    w = Workload(float(trace.input_tokens.mean()), float(trace.output_tokens.mean()))
    batch = model.decode_batch(scenario.slo.itl_ms, w)
    share = batch * (w.isl_mean_tokens + w.osl_mean_tokens / 2.0) / max(1.0, float(model.profile.max_kv_tokens))
    return min(0.95, max(0.01, share))


def tune_keda(
    runner: Runner, target: float, ladder: Sequence[float] = KEDA_LADDER, windows: Sequence[float] = KEDA_WINDOWS_S
) -> tuple[Result, list[Result]]:
    """Walk the target scale down until attainment is met, per scale-down window; then relax one trigger."""
    kv0 = calibrated_kv_threshold(runner.scenario, runner.trace)

    def knobs(s_prefill: float, s_decode: float, window: float) -> dict[str, Any]:
        return {
            "prefill_queue_s": round(2.0 * s_prefill, 4),
            "kv_threshold": round(min(0.95, kv0 * s_decode), 4),
            "scale_down_window_s": window,
        }

    tried: list[Result] = []
    for window in windows:
        prev = None
        for s in ladder:
            res = runner.run("keda", knobs(s, s, window))
            tried.append(res)
            if res.attainment >= target:
                if prev is not None:  # maybe only one role needed the smaller target
                    tried.append(runner.run("keda", knobs(prev, s, window)))
                    tried.append(runner.run("keda", knobs(s, prev, window)))
                break
            prev = s
        if prev is None and tried[-1].attainment >= target:  # met at the first rung: walk up to cheaper targets
            met = ladder[0]
            for s in KEDA_UP:
                res = runner.run("keda", knobs(s, s, window))
                tried.append(res)
                if res.attainment < target:
                    tried.append(runner.run("keda", knobs(s, met, window)))
                    tried.append(runner.run("keda", knobs(met, s, window)))
                    break
                met = s
    return _pick(tried, target), tried


def _bisect_floor(run: Callable[[int], Result], target: float, hi: int) -> list[Result]:
    """Smallest integer floor in [1, hi] meeting ``target`` (attainment grows with the floor), by bisection."""
    tried = [run(1)]
    if tried[-1].attainment >= target:
        return tried
    top = run(hi)
    tried.append(top)
    if top.attainment < target:
        return tried
    lo, up = 1, hi  # lo fails, up meets
    while up - lo > 1:
        mid = (lo + up) // 2
        res = run(mid)
        tried.append(res)
        if res.attainment >= target:
            up = mid
        else:
            lo = mid
    return tried


def tune_dynamo(
    runner: Runner, target: float, intervals: Sequence[float] = DYNAMO_INTERVALS_S
) -> tuple[Result, list[Result]]:
    """Bisect the floor ``min_endpoint`` per adjustment interval."""
    tried: list[Result] = []
    hi = max(2, min(runner.scenario.max_replicas, 16))
    for interval in intervals:

        def run(floor: int, iv: float = interval) -> Result:
            return runner.run("dynamo-like", {"adjustment_interval_s": iv, "min_endpoint": floor})

        tried += _bisect_floor(run, target, hi)
    return _pick(tried, target), tried


def write_copy(scenario: Scenario, out: Path, tuned: Mapping[str, Mapping[str, Any]]) -> Path:
    """The scenario with ``forecaster: last_value`` and the tuned peers' params, as a self-contained YAML file."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    data["forecaster"] = "last_value"
    data["policy_params"] = {**data.get("policy_params", {}), **{k: dict(v) for k, v in tuned.items()}}
    path = out / f"{scenario.name}.yaml"
    path.write_text(
        "# written by bench/tune_peers.py: the bundled scenario, forecaster last_value, the peers' tuned knobs\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return path


def _csv(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _floats(spec: str) -> list[float]:
    return [float(x) for x in spec.split(",") if x.strip()]


def _commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(
            ["git", "-C", str(here), "log", "--oneline", "-1"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(FAST), help="comma list of bundled scenario names")
    ap.add_argument("--out", required=True, help="directory for the tuned scenario copies")
    ap.add_argument("--json", help="write every run's knobs and figures here")
    ap.add_argument("--keda-ladder", default=_csv(KEDA_LADDER), help="keda target scales to walk, largest first")
    ap.add_argument("--keda-windows", default=_csv(KEDA_WINDOWS_S), help="keda scale-down windows (s) to try")
    ap.add_argument("--dynamo-intervals", default=_csv(DYNAMO_INTERVALS_S), help="dynamo-like intervals (s) to try")
    args = ap.parse_args(argv)
    configure_logging("warning")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"code: {_commit()}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    log: dict[str, Any] = {}
    for name in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        scenario = load_scenario(SCENARIO_DIR / f"{name}.yaml")
        runner = Runner(scenario)
        target = scenario.attainment_target
        slo = runner.run("slo", {})
        keda, keda_all = tune_keda(runner, target, _floats(args.keda_ladder), _floats(args.keda_windows))
        dyn, dyn_all = tune_dynamo(runner, target, _floats(args.dynamo_intervals))
        write_copy(scenario, out, {"keda": keda.knobs, "dynamo-like": dyn.knobs})
        log[name] = {
            "slo": slo.__dict__,
            "keda": [r.__dict__ for r in keda_all],
            "dynamo-like": [r.__dict__ for r in dyn_all],
        }
        for peer, best, tried in (("keda", keda, keda_all), ("dynamo-like", dyn, dyn_all)):
            rows.append({"scenario": name, "peer": peer, "best": best, "tried": tried, "slo": slo, "target": target})
    print(
        "| scenario | peer | knobs (cheapest at the target, else best attainment) | peer attainment | peer GPU-h "
        "| slo attainment | slo GPU-h | slo / peer | peer's cheapest run at >= slo's attainment |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, s = r["best"], r["slo"]
        met = "" if b.attainment >= r["target"] else " (best reached)"
        matched = [t for t in r["tried"] if t.attainment >= s.attainment]
        if matched:
            m = min(matched, key=lambda t: t.gpu_hours)
            at_slo = (
                f"{_fmt(m.knobs)}: {m.attainment:.2%}, {m.gpu_hours:.1f} GPU-h (slo {s.gpu_hours / m.gpu_hours:.2f}x)"
            )
        else:
            at_slo = "none reached it"
        print(
            f"| {r['scenario']} | {r['peer']} | {_fmt(b.knobs)} | {b.attainment:.2%}{met} | {b.gpu_hours:.1f} | "
            f"{s.attainment:.2%} | {s.gpu_hours:.1f} | {s.gpu_hours / b.gpu_hours:.2f}x | {at_slo} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"code": _commit(), "scenarios": log}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
