"""Validation of policy parameters: unknown or ill-typed entries raise ValueError naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Param", "validate_params"]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its type (int, float, bool or object), default, and an optional range check."""

    kind: type
    default: Any
    check: Callable[[Any], bool] | None = None
    requirement: str = ""


def _coerce(policy: str, name: str, p: Param, value: Any) -> Any:
    where = f"{policy} policy: parameter {name!r}"
    if p.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if p.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if p.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    return value


def validate_params(policy: str, params: Mapping[str, Any] | None, spec: Mapping[str, Param]) -> dict[str, Any]:
    """Defaults overlaid with ``params``; raises ValueError naming the first bad parameter."""
    given = dict(params or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ValueError(f"{policy} policy: unknown parameter(s) {unknown}; known: {sorted(spec)}")
    out: dict[str, Any] = {}
    for name, p in spec.items():
        if name not in given:
            out[name] = p.default
            continue
        value = _coerce(policy, name, p, given[name])
        if p.check is not None and not p.check(value):
            raise ValueError(f"{policy} policy: parameter {name!r} {p.requirement}, got {value!r}")
        out[name] = value
    return out
