"""True hardware variants: the simulated replica differs from the profile the controller is given.

A hardware file (JSON, format ``pdscale-hardware/v1``) starts from the calibrated H100 model
(``simulator/data/perf_params.json``) and changes its *shape*, not only its level:

    {"format": "pdscale-hardware/v1",
     "description": "...", "source": "where the shape comes from",
     "dtype": "fp8",                                   # optional: the weights/KV dtype the hardware runs
     "scale": {"decode_ms_per_seq": 0.3},              # optional: multiply fitted coefficients (every TP)
     "coefficients": {"8": {"decode_overhead_ms": 40}},  # optional: set coefficients of one TP degree
     "engine": {"max_running_seqs": 512}}              # optional: engine limits (ClusterConfig fields)

A scenario names one with ``hardware:``; the controller keeps its default profile unless the scenario says
otherwise, so calibration meets hardware that differs in shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdscale.simulator.perf import (
    COEFFICIENT_NAMES,
    DTYPES,
    PerfModel,
    PerfModelError,
    build_perf_model,
    coefficients_for,
    load_params,
    model_shape,
)

__all__ = ["ENGINE_LIMITS", "HARDWARE_FORMAT", "HardwareError", "HardwareVariant", "load_hardware"]

HARDWARE_FORMAT = "pdscale-hardware/v1"
ENGINE_LIMITS = (
    "max_running_seqs",
    "prefill_token_budget",
    "prefill_chunk_tokens",
    "colocated_token_budget",
    "kv_link_gbps_per_gpu",
    "max_model_len",
)
"""The engine limits a hardware file may set (ClusterConfig fields)."""


class HardwareError(ValueError):
    """A hardware file is unreadable or invalid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class HardwareVariant:
    """A replica type the simulator runs (see the module docstring)."""

    name: str
    description: str = ""
    source: str = ""
    dtype: str | None = None
    scale: Mapping[str, float] = field(default_factory=dict)
    coefficients: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    engine: Mapping[str, float] = field(default_factory=dict)

    def perf_model(self, model: str, tp: int, dtype: str = "bf16") -> PerfModel:
        """The performance model of one replica of ``model`` on ``tp`` GPUs of this hardware."""
        params = load_params()
        coeffs, _ = coefficients_for(params, tp)
        coeffs = dict(coeffs)
        coeffs.update(self.coefficients.get(tp, {}))
        for key, factor in self.scale.items():
            coeffs[key] = coeffs[key] * factor
        return build_perf_model(params, model_shape(params, model), tp, self.dtype or dtype, coeffs)


def _number(where: str, key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HardwareError(f"{where}: {key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise HardwareError(f"{where}: {key} must be > 0, got {value!r}")
    return float(value)


def load_hardware(path: str | Path) -> HardwareVariant:
    """Read and validate a hardware file; errors name the file and the field."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise HardwareError(f"{p}: cannot read hardware file: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise HardwareError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != HARDWARE_FORMAT:
        raise HardwareError(f"{p}: field 'format' must be {HARDWARE_FORMAT!r}")
    unknown = sorted(set(data) - {"format", "description", "source", "dtype", "scale", "coefficients", "engine"})
    if unknown:
        raise HardwareError(f"{p}: unknown field(s) {', '.join(unknown)}")
    dtype = data.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise HardwareError(f"{p}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    scale: dict[str, float] = {}
    for key, value in (data.get("scale") or {}).items():
        if key not in COEFFICIENT_NAMES:
            raise HardwareError(f"{p}: scale.{key}: not a coefficient ({', '.join(COEFFICIENT_NAMES)})")
        scale[key] = _number(f"{p}: scale", key, value)
    coefficients: dict[int, dict[str, float]] = {}
    for tp, table in (data.get("coefficients") or {}).items():
        if not str(tp).isdigit() or not isinstance(table, dict):
            raise HardwareError(f"{p}: coefficients: keys are TP degrees mapping to coefficient tables")
        for key, value in table.items():
            if key not in COEFFICIENT_NAMES:
                raise HardwareError(f"{p}: coefficients.{tp}.{key}: not a coefficient")
            coefficients.setdefault(int(tp), {})[key] = _number(f"{p}: coefficients.{tp}", key, value)
    engine: dict[str, float] = {}
    for key, value in (data.get("engine") or {}).items():
        if key not in ENGINE_LIMITS:
            raise HardwareError(f"{p}: engine.{key}: unknown limit (known: {', '.join(ENGINE_LIMITS)})")
        number = _number(f"{p}: engine", key, value)
        engine[key] = int(number) if key != "kv_link_gbps_per_gpu" else number
    variant = HardwareVariant(
        name=p.stem,
        description=str(data.get("description", "")),
        source=str(data.get("source", "")),
        dtype=dtype,
        scale=scale,
        coefficients=coefficients,
        engine=engine,
    )
    try:
        variant.perf_model("llama-3.1-70b", 4)
    except (PerfModelError, KeyError, ValueError) as exc:
        raise HardwareError(f"{p}: {exc}") from None
    return variant
