"""Conversions between core types and the admin API's protobuf messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.core.types import SLO, Forecast, Override, OverrideMode, PoolSpec, Signal
from pdscale.controller.runtime.record import DecisionRecord
from pdscale.controller.runtime.redact import redact, redact_text

__all__ = [
    "MODE_FROM_PB",
    "MODE_TO_PB",
    "decision_to_pb",
    "dict_to_struct",
    "forecast_to_pb",
    "override_to_pb",
    "pool_spec_to_pb",
    "shown_struct",
    "slo_to_pb",
    "struct_to_dict",
]

MODE_TO_PB: Mapping[OverrideMode, int] = {
    OverrideMode.EXACT: pb.OVERRIDE_MODE_EXACT,
    OverrideMode.MIN: pb.OVERRIDE_MODE_MIN,
    OverrideMode.MAX: pb.OVERRIDE_MODE_MAX,
}
MODE_FROM_PB: Mapping[int, OverrideMode] = {v: k for k, v in MODE_TO_PB.items()}


def _plain(value: Any) -> Any:
    """Struct numbers arrive as floats: integral ones become ints so plugins can validate counts."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values (integral numbers as int)."""
    out: dict[str, Any] = _plain(json_format.MessageToDict(struct))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def dict_to_struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    """Plain JSON-like values as a Struct (NaN/inf become null)."""
    s = struct_pb2.Struct()
    s.update(_jsonable(dict(data)))
    return s


def shown_struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    """``dict_to_struct`` of what the admin API shows: plugin params and decision inputs with credentials masked."""
    return dict_to_struct(redact(dict(data)))


def slo_to_pb(slo: SLO) -> pb.SLO:
    """The SLO message."""
    return pb.SLO(ttft_ms=slo.ttft_ms, itl_ms=slo.itl_ms, quantile=slo.quantile)


def forecast_to_pb(signal: Signal, fc: Forecast) -> pb.ForecastValue:
    """One signal's forecast."""
    return pb.ForecastValue(
        signal=signal.value,
        mean=fc.mean,
        quantiles={str(q): v for q, v in fc.quantiles.items()},
        ready=fc.ready,
        model=fc.model,
        horizon_s=fc.horizon_s,
        note=fc.note,
    )


def override_to_pb(o: Override) -> pb.Override:
    """An override message."""
    msg = pb.Override(pool=o.pool, mode=MODE_TO_PB[o.mode], replicas=o.replicas, reason=o.reason)  # type: ignore[arg-type]
    if o.expires_s is not None:
        msg.expires_s = o.expires_s
    return msg


def pool_spec_to_pb(spec: PoolSpec) -> pb.PoolSpec:
    """A pool spec message."""
    return pb.PoolSpec(
        name=spec.name,
        role=spec.role.value,
        gpus_per_replica=spec.gpus_per_replica,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        cold_start_s=spec.cold_start_s,
        drain_timeout_s=spec.drain_timeout_s,
        model=spec.model,
    )


_INT32_MAX = 2**31 - 1


def _int32(value: int) -> int:
    """A replica count saturated into the proto's int32: one absurd proposal (a plugin's, say) must not make
    every later ListDecisions / Explain / Watch fail with "Value out of range"."""
    return max(-_INT32_MAX - 1, min(_INT32_MAX, int(value)))


def decision_to_pb(rec: DecisionRecord) -> pb.DecisionRecord:
    """A recorded decision with per-pool outcomes (reasons and details with credentials masked)."""
    d = rec.decision
    flipped = {f.from_pool for f in d.flips} | {f.to_pool for f in d.flips}
    pools = []
    for name, p in d.pools.items():
        out = rec.outcomes.get(name)
        pools.append(
            pb.PoolDecision(
                pool=name,
                previous=_int32(p.previous),
                proposed=_int32(p.proposed),
                target=_int32(p.target),
                direction="flip" if name in flipped else p.direction.value,
                reason=redact_text(p.reason),
                guards=list(p.guards),
                estimate={k: float(v) for k, v in p.estimate.items() if math.isfinite(float(v))},
                outcome=out.outcome.value if out else "",
                outcome_detail=redact_text(out.detail) if out else "",
                error_class=(out.error_class or "") if out else "",
            )
        )
    return pb.DecisionRecord(
        id=rec.id,
        time_s=d.time_s,
        policy=d.policy,
        held=d.held,
        pools=pools,
        flips=[pb.RoleFlip(from_pool=f.from_pool, to_pool=f.to_pool, count=f.count) for f in d.flips],
    )
