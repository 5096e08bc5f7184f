"""``static``: fixed replica counts per pool (the baseline every autoscaler must beat on cost)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pdscale.controller.core.protocols import PolicyContext, Proposal

__all__ = ["StaticPolicy"]


MAX_REPLICAS = 100_000
"""Far above any pool's ``max_replicas``: a count beyond it is a typo, and would not fit the audit trail."""


class StaticPolicy:
    """Holds each pool at ``params.replicas[pool]`` (default: its current target).

    Parameters:
        replicas: mapping of pool name to replica count.
    """

    name = "static"
    uses_forecasts = False
    """Reads no forecast: the bench runs it with the cheapest forecaster (same decisions, faster)."""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        params = dict(params or {})
        unknown = set(params) - {"replicas"}
        if unknown:
            raise ValueError(f"static policy: unknown parameter(s) {sorted(unknown)}; known: ['replicas']")
        replicas = params.get("replicas", {})
        if not isinstance(replicas, Mapping):
            raise ValueError("static policy: 'replicas' must map pool names to counts")
        self.replicas: dict[str, int] = {}
        for pool, n in replicas.items():
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_REPLICAS:
                raise ValueError(f"static policy: replicas.{pool} must be an integer in [0, {MAX_REPLICAS}], got {n!r}")
            self.replicas[str(pool)] = n

    def decide(self, ctx: PolicyContext) -> Proposal:
        """The configured count for each pool; pools not configured keep their target."""
        targets = {name: self.replicas.get(name, ctx.states[name].target) for name in ctx.pools}
        return Proposal(targets=targets, reasons={n: f"static {t}" for n, t in targets.items()})
