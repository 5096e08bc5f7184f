"""Plugins for the kill -9 process suite (tests/controller/test_kill9_serve.py), registered for the daemon it
starts through a throw-away dist-info that ``write_dist_info`` creates (never the shared test doubles):

- ``scripted`` policy: per pool counts from a script of goals, one per ``step_s`` from ``start_s`` (cycling), or
  ``hold`` for ever; when the actuator can flip roles, a goal that moves replicas from one pool to the other is
  reached by a flip of the ready replicas first (the rest by targets). Pure: it reads only ``ctx``.
- ``steady`` metrics source: every pool reports the same busy signals, fresh at each fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import DataState, PoolObservation, RoleFlip, Signals

__all__ = ["POOLS", "ScriptedPolicy", "SteadySource", "write_dist_info"]

POOLS = ("prefill", "decode")


class ScriptedPolicy:
    """Goals ``[prefill, decode]`` from ``params.steps`` (one per ``step_s`` since ``start_s``) or ``params.hold``."""

    name = "scripted"
    uses_forecasts = False

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        p = dict(params or {})
        self.start_s = float(p.get("start_s", 0.0))
        self.step_s = float(p.get("step_s", 1.0))
        self.steps = [tuple(int(x) for x in s) for s in p.get("steps") or [[1, 1]]]
        self.hold = tuple(int(x) for x in p["hold"]) if p.get("hold") else None

    def goal(self, now_s: float) -> dict[str, int]:
        """The goal in force at ``now_s``."""
        if self.hold is not None:
            g = self.hold
        else:
            g = self.steps[int(max(0.0, now_s - self.start_s) / self.step_s) % len(self.steps)]
        return dict(zip(POOLS, g, strict=True))

    def decide(self, ctx: PolicyContext) -> Proposal:
        """The goal as targets; a flip where one pool gives what the other needs (ready replicas only)."""
        want = self.goal(ctx.now_s)
        flips: tuple[RoleFlip, ...] = ()
        if ctx.supports_role_flip:
            for a, b in (("prefill", "decode"), ("decode", "prefill")):
                st_a, st_b = ctx.states[a], ctx.states[b]
                n = min(st_a.target - want[a], want[b] - st_b.target, st_a.ready)
                if n > 0:
                    flips = (RoleFlip(a, b, n),)
        return Proposal(targets=want, reasons={p: f"scripted {want[p]}" for p in want}, flips=flips)


class SteadySource:
    """Every configured pool busy, the same each fetch."""

    def __init__(self, pools: Mapping[str, Any], params: Mapping[str, Any] | None = None, env: object = None) -> None:
        self.pools = list(pools)
        del params, env

    def fetch(self, now: float) -> Mapping[str, PoolObservation]:
        """One fresh observation per pool."""
        sig = Signals(prompt_tokens_per_s=1000.0, request_rate_per_s=1.0, running_requests=10.0, waiting_requests=0.0)
        return {p: PoolObservation(pool=p, state=DataState.OK, signals=sig, sample_time_s=now) for p in self.pools}

    def close(self) -> None:
        """Nothing to release."""


def write_dist_info(folder: Path) -> Path:
    """A dist-info registering this module's plugins; put ``folder`` on the daemon's PYTHONPATH."""
    dist = folder / "pdscale_kill9_plugins-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pdscale-kill9-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[pdscale.policies]\nscripted = tests.helpers.kill9_plugins:ScriptedPolicy\n\n"
        "[pdscale.metrics_sources]\nsteady = tests.helpers.kill9_plugins:SteadySource\n"
    )
    return folder
