"""JSON codec of decision records as the state store keeps them (NaN and inf stored as null)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.types import Decision, PoolDecision, RoleFlip
from pdscale.controller.runtime.record import DecisionRecord, Outcome, PoolOutcome

__all__ = ["decision_record_from_json", "decision_record_to_json", "dumps", "scrub"]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def decision_record_to_json(rec: DecisionRecord) -> dict[str, Any]:
    """A decision record as plain JSON types (inputs excluded; they are stored separately)."""
    d = rec.decision
    return {
        "id": rec.id,
        "time_s": d.time_s,
        "policy": d.policy,
        "held": d.held,
        "flips": [[f.from_pool, f.to_pool, f.count] for f in d.flips],
        "pools": {
            name: {
                "previous": p.previous,
                "proposed": p.proposed,
                "target": p.target,
                "reason": p.reason,
                "guards": list(p.guards),
                "estimate": {k: _finite(float(v)) for k, v in p.estimate.items()},
            }
            for name, p in d.pools.items()
        },
        "outcomes": {
            name: {"outcome": o.outcome.value, "detail": o.detail, "error_class": o.error_class}
            for name, o in rec.outcomes.items()
        },
    }


def decision_record_from_json(body: Mapping[str, Any], inputs: Mapping[str, Any] | None = None) -> DecisionRecord:
    """Inverse of ``decision_record_to_json``."""
    pools = {
        name: PoolDecision(
            pool=name,
            previous=int(p["previous"]),
            proposed=int(p["proposed"]),
            target=int(p["target"]),
            reason=str(p["reason"]),
            guards=tuple(p["guards"]),
            estimate={k: (math.nan if v is None else float(v)) for k, v in p["estimate"].items()},
        )
        for name, p in body["pools"].items()
    }
    decision = Decision(
        time_s=float(body["time_s"]),
        policy=str(body["policy"]),
        pools=pools,
        flips=tuple(RoleFlip(a, b, int(n)) for a, b, n in body["flips"]),
        held=bool(body["held"]),
    )
    outcomes = {
        name: PoolOutcome(Outcome(o["outcome"]), str(o["detail"]), o["error_class"])
        for name, o in body["outcomes"].items()
    }
    return DecisionRecord(id=int(body["id"]), decision=decision, inputs=dict(inputs or {}), outcomes=outcomes)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str, allow_nan=False)


def scrub(value: Any) -> Any:
    """Replace NaN/inf (not JSON) with None, recursively."""
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
