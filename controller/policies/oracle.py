"""``oracle``: hindsight sizing with the exact future demand; the lower bound every policy is measured against.

Parameters:
    demand: an object with ``peak(pool, start_s, end_s) -> Mapping[Signal, float]`` (and optionally
        ``workload(start_s, end_s, default) -> Workload``), e.g. ``pdscale.controller.lab.oracle_demand.OracleDemand``
        built from the replayed trace. Replays run the oracle with cold start 0 (instant scaling).
    isl_tokens, osl_tokens: request shape when the demand object gives none.
Each tick, each pool gets what the capacity model needs for the peak demand of ``[now, now + lead time]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.capacity import Workload
from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.policies.params import Param, validate_params

__all__ = ["OraclePolicy"]

PARAMS: Mapping[str, Param] = {
    "demand": Param(object, None),
    "isl_tokens": Param(float, 1024.0, lambda v: v > 0, "must be > 0"),
    "osl_tokens": Param(float, 256.0, lambda v: v > 0, "must be > 0"),
}


class OraclePolicy:
    """Sizes every pool for the true peak demand over its lead time."""

    name = "oracle"
    uses_forecasts = False
    """Reads no forecast: the bench runs it with the cheapest forecaster (same decisions, faster)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = validate_params("oracle", params, PARAMS)
        demand = self.params["demand"]
        if demand is None or not callable(getattr(demand, "peak", None)):
            raise ValueError(
                "oracle policy: parameter 'demand' must be an object with peak(pool, start_s, end_s) "
                "(see pdscale.controller.lab.oracle_demand.build_oracle_demand)"
            )
        self.demand = demand
        self.defaults = Workload(self.params["isl_tokens"], self.params["osl_tokens"])

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Replicas for the exact peak demand of each pool's lead-time window."""
        current = {n: ctx.states[n].target for n in ctx.pools}
        if ctx.capacity is None:
            why = "hold: oracle needs a capacity model (capacity.profile)"
            return Proposal(targets=current, reasons=dict.fromkeys(current, why))
        targets: dict[str, int] = {}
        reasons: dict[str, str] = {}
        estimates: dict[str, dict[str, float]] = {}
        for name, spec in ctx.pools.items():
            end = ctx.now_s + ctx.lead_time_s(name)
            demand = dict(self.demand.peak(name, ctx.now_s, end))
            get_w = getattr(self.demand, "workload", None)
            w = get_w(ctx.now_s, end, self.defaults) if callable(get_w) else self.defaults
            est = ctx.capacity.replicas_needed(spec, demand, ctx.slo, workload=w)
            targets[name] = est.replicas
            reasons[name] = f"oracle: true peak over [{ctx.now_s:.0f}, {end:.0f}] s: {est.reason}"
            estimates[name] = {f"demand_{s.value}": float(v) for s, v in demand.items()}
        return Proposal(targets=targets, reasons=reasons, estimates=estimates)
