"""Benchmark scenarios: one YAML file per scenario (bundled: ``controller/bundled/scenarios/``), validated.

A scenario names the traffic (request lengths from a trace, arrivals shaped by a rate curve), the model and
its replica size, the SLO, the budget and the simulated hardware. ``extends: <other scenario>`` starts from
another file of the same directory and overrides fields (mappings merge key by key)::

    name: retail-day
    model: llama-3.1-70b
    tp: 4
    traffic:
      lengths: bundled:azure-conv        # trace whose (prompt, output) pairs are sampled
      rate_curve: bundled:servegen-14d   # or "own" (the lengths trace's own 60 s curve) or a CSV file
      curve_start_s: 0                   # where in the curve the replay starts
      duration_s: 86400
      rate_scale: 0.05
      burstiness: 0.0                    # Gamma burst factor per 60 s bin (0: Poisson on the curve)
      seed: 0
      quick_start_s: 75600               # the window `--quick` replays instead (optional)
      quick_duration_s: 7200
    slo: {ttft_ms: 1000, itl_ms: 50, quantile: 0.99}
    attainment_target: 0.99
    tick_s: 30
    cold_start_s: 300
    max_replicas: 32                     # per pool
    budget_gpus: null                    # a fixed fleet: the pools together never hold more
    slowdown: 1.0                        # simulated hardware slower (>1) than the profile the controller gets
    forecaster: ensemble
    policy_params: {slo: {headroom: 1.0}}
    static: {prefill: 4, decode: 8}      # the planner's best static split (bench computes it when absent)
    history: {days: 7, source: repeat}   # past days the controller knows at start-up (below)

``history`` stands for what a restarted daemon reads back from Prometheus at start-up: the demand signals of the
``days`` days before the replay, at the same clock times, fed to the seasonal history (``forecasting.seasonal``),
never graded. ``source: curve`` takes those days from the rate curve itself (it must reach back that far);
``source: repeat`` replays the scenario's own window on each past day (traffic that recurs daily at the same
time, such as an overnight gap). Each past day is a fresh draw (its own seed) on the same curve.

Errors name the file and the field (``ScenarioError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pdscale.controller.lab.bench_run import known_policies
from pdscale.controller.runtime.settings import safe_load_unique
from pdscale.simulator.hardware import load_hardware
from pdscale.simulator.synth import synthesize
from pdscale.simulator.traces import RateCurve, bundled_rate_curve, bundled_trace, load_rate_curve, load_trace

__all__ = [
    "SCENARIO_DIR",
    "History",
    "Scenario",
    "ScenarioError",
    "StaticSplit",
    "Traffic",
    "available_scenarios",
    "build_history",
    "build_trace",
    "load_scenario",
    "own_curve",
    "resolve_scenarios",
]

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "bundled" / "scenarios"
"""Where ``pdscale bench --scenarios NAME`` looks for ``NAME.yaml``."""


class ScenarioError(ValueError):
    """A scenario file is unreadable or invalid; the message names the file and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Traffic(_Section):
    """Where requests come from: lengths sampled from a trace, arrivals from a rate curve."""

    lengths: str = "bundled:azure-conv"
    rate_curve: str = "own"
    curve_start_s: float = Field(0.0, ge=0)
    duration_s: float = Field(3600.0, gt=0)
    rate_scale: float = Field(1.0, gt=0)
    burstiness: float = Field(0.0, ge=0, le=3)
    seed: int = 0
    quick_start_s: float | None = Field(None, ge=0)
    quick_duration_s: float = Field(3600.0, gt=0)


class History(_Section):
    """Past days known at start-up (see the module docstring)."""

    days: int = Field(0, ge=0, le=14)
    source: Literal["repeat", "curve"] = "repeat"


class SLOSection(_Section):
    """Latency targets (per request: TTFT and mean ITL)."""

    ttft_ms: float = Field(1000.0, gt=0)
    itl_ms: float = Field(50.0, gt=0)
    quantile: float = Field(0.99, ge=0.5, lt=1.0)


class StaticSplit(_Section):
    """Replicas per pool for the ``static`` policy."""

    prefill: int = Field(ge=1)
    decode: int = Field(ge=1)


class Scenario(_Section):
    """One benchmark scenario (see the module docstring)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    model: str = "llama-3.1-70b"
    tp: int = Field(4, ge=1)
    traffic: Traffic = Field(default_factory=Traffic)  # type: ignore[arg-type]
    slo: SLOSection = Field(default_factory=SLOSection)  # type: ignore[arg-type]
    attainment_target: float = Field(0.99, gt=0, le=1)
    tick_s: float = Field(30.0, gt=0)
    cold_start_s: float = Field(300.0, ge=0)
    max_replicas: int = Field(32, ge=1)
    budget_gpus: int | None = Field(None, ge=2)
    slowdown: float = Field(1.0, gt=0)
    hardware: str | None = None
    """A hardware file (``pdscale.simulator.hardware``): the simulated replica, apart from the controller's
    profile (which stays the default builtin one)."""
    forecaster: str = "last_value"
    policy_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    static: StaticSplit | None = None
    history: History = Field(default_factory=History)  # type: ignore[arg-type]

    @field_validator("hardware")
    @classmethod
    def _hardware_file(cls, value: str | None) -> str | None:
        if value is not None:
            load_hardware(value)  # a HardwareError (a ValueError) names the file and the field
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        known = known_policies()
        unknown = sorted(set(self.policy_params) - set(known))
        if unknown:
            raise ValueError(f"policy_params: unknown policy {unknown}; registered: {', '.join(known)}")
        if self.budget_gpus is not None and self.budget_gpus < 2 * self.tp:
            raise ValueError(f"budget_gpus ({self.budget_gpus}) must hold one replica per pool ({2 * self.tp} GPUs)")
        reach = self.history.days * 86400.0
        if self.history.source == "curve" and self.traffic.curve_start_s < reach:
            raise ValueError(
                f"history: {self.history.days} days of source 'curve' need traffic.curve_start_s >= {reach:.0f}"
                f" (got {self.traffic.curve_start_s:g}); use source 'repeat' or fewer days"
            )
        if self.budget_gpus is not None and self.static is not None:
            used = (self.static.prefill + self.static.decode) * self.tp
            if used > self.budget_gpus:
                raise ValueError(f"static split uses {used} GPUs, above budget_gpus ({self.budget_gpus})")
        return self

    def quick(self) -> Scenario:
        """The same scenario over its short ``quick`` window (for smoke runs; not the documented numbers)."""
        t = self.traffic
        start = t.quick_start_s if t.quick_start_s is not None else t.curve_start_s
        duration = min(t.duration_s, t.quick_duration_s)
        return self.model_copy(
            update={"traffic": t.model_copy(update={"curve_start_s": start, "duration_s": duration})}
        )


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Trace, curve and hardware files named relative to a scenario file resolve against its folder (as
    ``extends`` does), not against the directory pdscale runs in; ``bundled:`` names and ``own`` stay."""
    hardware = data.get("hardware")
    if isinstance(hardware, str):
        p = Path(hardware).expanduser()
        data["hardware"] = str(p if p.is_absolute() else (base / p).resolve())
    traffic = data.get("traffic")
    if not isinstance(traffic, dict):
        return
    for key in ("lengths", "rate_curve"):
        value = traffic.get(key)
        if isinstance(value, str) and value != "own" and not value.startswith("bundled:"):
            p = Path(value).expanduser()
            traffic[key] = str(p if p.is_absolute() else (base / p).resolve())


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        chain = " -> ".join(p.stem for p in (*seen, path))
        raise ScenarioError(f"{path}: extends: cycle {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror}") from None
    try:
        data = safe_load_unique(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping of fields, got {type(data).__name__}")
    _resolve_paths(data, path.parent)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ScenarioError(f"{path}: extends: must be a scenario name, got {parent!r}")
    base_path = path.with_name(f"{parent}.yaml")
    if not base_path.is_file():
        raise ScenarioError(f"{path}: extends: no scenario {parent!r} ({base_path} does not exist)")
    base = _read(base_path, (*seen, path))
    base.pop("name", None)
    base.pop("static", None)  # a static split is planned for one scenario's traffic and budget only
    return _merge(base, data)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario file; its name defaults to the file's stem."""
    p = Path(path)
    data = _read(p)
    data.setdefault("name", p.stem)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(root)"
            msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{p}: {loc}: {msg}")
        raise ScenarioError("\n".join(lines)) from None


def available_scenarios(directory: Path = SCENARIO_DIR) -> list[str]:
    """Scenario names (file stems) in ``directory``, sorted."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_scenarios(spec: str, directory: Path = SCENARIO_DIR) -> list[Scenario]:
    """``all``, or a comma list of names (files in ``directory``) or paths to YAML files."""
    names = available_scenarios(directory) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s]
    if not names:
        raise ScenarioError(f"no scenarios in {directory}")
    out = []
    for name in names:
        path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(available_scenarios(directory)) or "none"
            raise ScenarioError(f"unknown scenario {name!r} (no {path}); known: {known}")
        out.append(load_scenario(path))
    return out


def own_curve(lengths: Any, window_s: float = 60.0) -> Any:
    """A trace's own arrival curve (``rate_curve: own``), one bin per *full* minute: the last, partial minute
    (the trace ends at its last arrival, somewhere inside it) would otherwise read as a full one and dent the
    curve's end."""
    n = max(1, int(lengths.arrival_s[-1] // window_s))
    counts = np.bincount((lengths.arrival_s // window_s).astype(int), minlength=n)[:n]
    return RateCurve(np.arange(n, dtype=np.float64) * window_s, counts / window_s, window_s, f"{lengths.name}-curve")


def build_trace(scenario: Scenario) -> Any:
    """The scenario's replayed trace (a ``pdscale.simulator.traces.Trace``), deterministic for its seed."""
    return _synth(scenario, scenario.traffic.curve_start_s, scenario.traffic.duration_s, scenario.traffic.seed)


def build_history(scenario: Scenario) -> list[tuple[float, Any]]:
    """The traces of the scenario's ``history``: ``(offset_s, trace)`` pairs, a trace's time 0 being
    ``offset_s`` (negative) on the replay's clock. ``curve``: one trace of the ``days`` days before the replay;
    ``repeat``: the replayed window again on each past day (at most a day of it), each with its own seed."""
    h, t = scenario.history, scenario.traffic
    if h.days == 0:
        return []
    if h.source == "curve":
        reach = h.days * 86400.0
        return [(-reach, _synth(scenario, t.curve_start_s - reach, reach, t.seed + 1000))]
    span = min(t.duration_s, 86400.0)
    return [(-d * 86400.0, _synth(scenario, t.curve_start_s, span, t.seed + 1000 + d)) for d in range(1, h.days + 1)]


def _synth(scenario: Scenario, start_s: float, duration_s: float, seed: int) -> Any:
    t = scenario.traffic
    try:
        lengths = (
            bundled_trace(t.lengths.removeprefix("bundled:"))
            if t.lengths.startswith("bundled:")
            else load_trace(t.lengths)
        )
        if t.rate_curve == "own":
            curve = own_curve(lengths)
        elif t.rate_curve.startswith("bundled:"):
            curve = bundled_rate_curve(t.rate_curve.removeprefix("bundled:"))
        else:
            curve = load_rate_curve(t.rate_curve)
        return synthesize(
            curve,
            lengths,
            duration_s=duration_s,
            start_s=start_s,
            rate_scale=t.rate_scale,
            burstiness=t.burstiness,
            seed=seed,
            name=scenario.name,
        )
    except (ValueError, OSError) as exc:
        raise ScenarioError(f"scenario {scenario.name}: traffic: {exc}") from None
