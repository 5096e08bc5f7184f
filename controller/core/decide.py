"""The pure decision step: policy proposal -> guards -> budget -> Decision. No I/O, no clock."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field

from pdscale.controller.core.guards import GuardSettings, GuardState, PoolGuardState, apply_guards, enforce_budget
from pdscale.controller.core.protocols import Policy, PolicyContext, Proposal
from pdscale.controller.core.types import Decision, Override, PoolDecision, PoolObservation, RoleFlip

__all__ = ["ALL_POOLS", "DecideInput", "DecideOutput", "decide"]

ALL_POOLS = "*"


@dataclass(frozen=True, slots=True)
class DecideInput:
    """What one tick's decision needs beyond the policy context."""

    ctx: PolicyContext
    guard_settings: GuardSettings = field(default_factory=GuardSettings)
    guard_state: GuardState = field(default_factory=GuardState)
    overrides: Mapping[str, Override] = field(default_factory=dict)
    paused: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DecideOutput:
    """The decision, the states to carry to the next tick, and the policy error if it failed."""

    decision: Decision
    policy_state: Mapping[str, object]
    guard_state: GuardState
    error: str | None = None


def _hold_all(inp: DecideInput, policy_name: str, reason: str, *, failed: bool = True) -> DecideOutput:
    """Every pool holds; ``failed`` says the policy failed (an error to report), not an operator's pause."""
    ctx = inp.ctx
    pools = {
        name: PoolDecision(
            pool=name, previous=st.target, proposed=st.target, target=st.target, reason=reason, guards=("hold",)
        )
        for name, st in ctx.states.items()
    }
    return DecideOutput(
        decision=Decision(time_s=ctx.now_s, policy=policy_name, pools=pools, held=True),
        policy_state=ctx.state,
        guard_state=inp.guard_state,
        error=reason if failed else None,
    )


def _consistent_flips(
    flips: tuple[RoleFlip, ...], prev: Mapping[str, int], final: Mapping[str, int]
) -> tuple[RoleFlip, ...]:
    kept: list[RoleFlip] = []
    for f in flips:
        if f.from_pool not in final or f.to_pool not in final or f.count < 1:
            continue
        shrink = prev[f.from_pool] - final[f.from_pool]
        grow = final[f.to_pool] - prev[f.to_pool]
        count = min(f.count, shrink, grow)
        if count >= 1:
            kept.append(RoleFlip(from_pool=f.from_pool, to_pool=f.to_pool, count=count))
    return tuple(kept)


def _check_targets(proposal: Proposal) -> None:
    """Every proposed target is a whole, finite, non-negative number: NaN, inf, None, strings and fractions
    are a policy bug that holds every pool, never a crash or a silently truncated count."""
    for pool, value in proposal.targets.items():
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if ok:
            as_float = float(value)
            ok = math.isfinite(as_float) and as_float >= 0 and as_float.is_integer()
        if not ok:
            raise ValueError(f"target for pool {pool!r} must be a whole number >= 0, got {value!r}")


def decide(policy: Policy, inp: DecideInput) -> DecideOutput:
    """Ask the policy, then apply guards per pool and the budget jointly. A policy error holds every pool."""
    ctx = inp.ctx
    policy_name = getattr(policy, "name", type(policy).__name__)
    if ALL_POOLS in inp.paused and not inp.overrides:
        return _hold_all(inp, policy_name, "paused", failed=False)
    try:
        proposal = policy.decide(ctx)
        if not isinstance(proposal, Proposal):
            raise TypeError(f"policy returned {type(proposal).__name__}, expected Proposal")
        _check_targets(proposal)
    except Exception as exc:
        return _hold_all(inp, policy_name, f"policy_error: {type(exc).__name__}: {exc}")

    targets: dict[str, int] = {}
    guards: dict[str, tuple[str, ...]] = {}
    memory: dict[str, PoolGuardState] = dict(inp.guard_state.pools)
    for name, spec in ctx.pools.items():
        state = ctx.states[name]
        proposed = int(proposal.targets.get(name, state.target))
        if name in inp.paused or ALL_POOLS in inp.paused:
            targets[name], guards[name] = state.target, ("paused",)
            continue
        target, fired, memory[name] = apply_guards(
            now=ctx.now_s,
            spec=spec,
            state=state,
            obs=ctx.observations.get(name) or PoolObservation.missing(name, "no observation this tick"),
            proposed=proposed,
            settings=inp.guard_settings,
            memory=inp.guard_state.get(name),
            override=inp.overrides.get(name),
            counts_starting=proposal.counts_starting,
        )
        targets[name], guards[name] = target, fired

    budgeted, budget_fired = enforce_budget(targets, ctx.pools, ctx.states, ctx.budget_gpus)
    for name, why in budget_fired.items():
        guards[name] = (*guards[name], why)
    prev = {n: ctx.states[n].target for n in ctx.pools}
    flips = _consistent_flips(proposal.flips, prev, budgeted) if ctx.supports_role_flip else ()

    pools = {
        name: PoolDecision(
            pool=name,
            previous=prev[name],
            proposed=int(proposal.targets.get(name, prev[name])),
            target=budgeted[name],
            reason=proposal.reasons.get(name, ""),
            guards=guards[name],
            estimate=dict(proposal.estimates.get(name, {})),
        )
        for name in ctx.pools
    }
    return DecideOutput(
        decision=Decision(time_s=ctx.now_s, policy=policy_name, pools=pools, flips=flips),
        policy_state=proposal.state,
        guard_state=GuardState(pools=memory),
    )
