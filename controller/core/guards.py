"""Guards: small pure functions that wrap any policy's proposal with the safety rules of DESIGN.md.

Each guard takes a proposed target and returns ``(target, fired)`` where ``fired`` names the guard when it
changed or pinned the value. ``apply_guards`` chains them per pool, then ``enforce_budget`` decides jointly.
Times are seconds from the caller's clock; windows compare timestamps, never tick counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pdscale.controller.core.types import DataState, Override, OverrideMode, PoolObservation, PoolSpec, PoolState

__all__ = [
    "GuardSettings",
    "GuardState",
    "PoolGuardState",
    "apply_bounds",
    "apply_guards",
    "apply_override",
    "budget_cost_gpus",
    "enforce_budget",
    "hold_on_bad_data",
    "hold_while_starting",
    "limit_step",
    "stabilise",
    "zero_traffic",
]

Fired = tuple[int, str | None]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """Tunables of the guards (see docs/guards in README)."""

    max_step_up: int = 4
    max_step_down: int = 1
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 300.0
    stale_after_s: float = 120.0
    zero_traffic_window_s: float = 900.0
    hold_while_starting: bool = True


@dataclass(frozen=True, slots=True)
class PoolGuardState:
    """Per-pool memory of the guards: recent proposals and when traffic went to zero."""

    history: tuple[tuple[float, int], ...] = ()
    zero_since_s: float | None = None
    since_s: float | None = None
    """When the guards first saw usable data for the pool: a scale-down waits until a whole window is known."""


@dataclass(frozen=True, slots=True)
class GuardState:
    """Guard memory for every pool."""

    pools: Mapping[str, PoolGuardState] = field(default_factory=dict)

    def get(self, pool: str) -> PoolGuardState:
        """A pool's guard state (empty when new)."""
        return self.pools.get(pool, PoolGuardState())


def hold_on_bad_data(current: int, proposed: int, obs: PoolObservation, now: float, stale_after_s: float) -> Fired:
    """Missing, stale or NaN metrics: hold the current target."""
    if obs.state is not DataState.OK:
        return current, f"hold_{obs.state.value}_metrics"
    age = obs.staleness_s(now)
    if age is not None and age > stale_after_s:
        return current, "hold_stale_metrics"
    return proposed, None


def zero_traffic(
    current: int, proposed: int, spec: PoolSpec, zero_since_s: float | None, now: float, window_s: float
) -> Fired:
    """Zero traffic scales to the minimum after ``window_s``; before that it does not scale down."""
    if zero_since_s is None:
        return proposed, None
    if now - zero_since_s >= window_s:
        return spec.min_replicas, "zero_traffic_to_min"
    if proposed < current:
        return current, "zero_traffic_wait"
    return proposed, None


def stabilise(
    current: int,
    proposed: int,
    history: tuple[tuple[float, int], ...],
    now: float,
    up_window_s: float,
    down_window_s: float,
    since_s: float | None = None,
) -> Fired:
    """HPA-style windows: scale down only to the highest proposal of the last ``down_window_s``;
    scale up only to the lowest proposal of the last ``up_window_s``.

    With ``since_s`` (when proposals started to be recorded, e.g. after a restart), no scale-down happens before
    a whole down window of proposals is known: an empty history is not evidence that fewer replicas suffice.
    """
    if proposed < current and since_s is not None and now - since_s < down_window_s:
        return current, "scale_down_window"
    if proposed < current:
        recent = [v for t, v in history if now - t <= down_window_s] + [proposed]
        stable = min(current, max(recent))
        return stable, ("scale_down_window" if stable != proposed else None)
    if proposed > current and up_window_s > 0:
        recent = [v for t, v in history if now - t <= up_window_s] + [proposed]
        stable = max(current, min(recent))
        return stable, ("scale_up_window" if stable != proposed else None)
    return proposed, None


def limit_step(current: int, proposed: int, max_up: int, max_down: int) -> Fired:
    """At most ``max_up`` replicas added and ``max_down`` removed per tick."""
    if proposed > current + max_up:
        return current + max_up, "max_step_up"
    if proposed < current - max_down:
        return current - max_down, "max_step_down"
    return proposed, None


def hold_while_starting(current: int, proposed: int, state: PoolState, counts_starting: bool = False) -> Fired:
    """No repeated scale-up while earlier replicas are still starting.

    A proposal that already counts the starting replicas as capacity (``Proposal.counts_starting``: sized from
    demand, not from ready replicas) is a new need, not a repeat, and passes.
    """
    if proposed > current and state.starting > 0 and not counts_starting:
        return current, "hold_while_starting"
    return proposed, None


def apply_bounds(proposed: int, spec: PoolSpec) -> Fired:
    """Clamp to the pool's ``[min_replicas, max_replicas]``."""
    if proposed < spec.min_replicas:
        return spec.min_replicas, "min_replicas"
    if proposed > spec.max_replicas:
        return spec.max_replicas, "max_replicas"
    return proposed, None


def apply_override(proposed: int, override: Override | None, now: float) -> Fired:
    """An operator's exact, min or max pin wins over the policy while it is active."""
    if override is None or not override.active(now):
        return proposed, None
    if override.mode is OverrideMode.EXACT:
        return override.replicas, "override_exact"
    if override.mode is OverrideMode.MIN and proposed < override.replicas:
        return override.replicas, "override_min"
    if override.mode is OverrideMode.MAX and proposed > override.replicas:
        return override.replicas, "override_max"
    return proposed, None


def _observed_zero(obs: PoolObservation) -> bool:
    s = obs.signals
    if obs.state is not DataState.OK or s.request_rate_per_s is None:
        return False
    return s.request_rate_per_s == 0.0 and (s.running_requests or 0.0) == 0.0 and (s.waiting_requests or 0.0) == 0.0


def apply_guards(
    *,
    now: float,
    spec: PoolSpec,
    state: PoolState,
    obs: PoolObservation,
    proposed: int,
    settings: GuardSettings,
    memory: PoolGuardState,
    override: Override | None = None,
    counts_starting: bool = False,
) -> tuple[int, tuple[str, ...], PoolGuardState]:
    """Run one pool's guards in order; returns the target, the guards that fired and the new memory."""
    current = state.target
    fired: list[str] = []
    zero_since = memory.zero_since_s
    if _observed_zero(obs):
        zero_since = now if zero_since is None else zero_since
    elif obs.state is DataState.OK:
        zero_since = None
    history = tuple(
        (t, v) for t, v in memory.history if now - t <= max(settings.scale_down_window_s, settings.scale_up_window_s)
    )

    target, why = hold_on_bad_data(current, proposed, obs, now, settings.stale_after_s)
    data_ok = why is None
    since = memory.since_s if memory.since_s is not None else (now if data_ok else None)
    if why:
        fired.append(why)
    if data_ok:
        target, why = zero_traffic(current, target, spec, zero_since, now, settings.zero_traffic_window_s)
        if why:
            fired.append(why)
        if why != "zero_traffic_to_min":
            stable, why = stabilise(
                current, target, history, now, settings.scale_up_window_s, settings.scale_down_window_s, since
            )
            if why:
                fired.append(why)
            target = stable
        target, why = limit_step(current, target, settings.max_step_up, settings.max_step_down)
        if why:
            fired.append(why)
        if settings.hold_while_starting:
            target, why = hold_while_starting(current, target, state, counts_starting)
            if why:
                fired.append(why)
    target, why = apply_override(target, override, now)
    if why:
        fired.append(why)
    target, why = apply_bounds(target, spec)
    if why:
        fired.append(why)
    if data_ok:
        history = (*history, (now, proposed))
    return target, tuple(fired), replace(memory, history=history, zero_since_s=zero_since, since_s=since)


def budget_cost_gpus(spec: PoolSpec, state: PoolState, target: int) -> int:
    """GPUs a pool holds right after moving to ``target``: draining replicas stay paid until they leave,
    starting ones can be cancelled at once, ready ones beyond the target start draining."""
    return (max(target, state.ready) + state.draining) * spec.gpus_per_replica


def enforce_budget(
    targets: Mapping[str, int],
    specs: Mapping[str, PoolSpec],
    states: Mapping[str, PoolState],
    budget_gpus: int | None,
) -> tuple[dict[str, int], dict[str, str]]:
    """Never exceed the GPU budget, not even between two steps of a rebalance (shrink before grow).

    Growth is cut first (largest grower first) until the cost after this step fits; if the pools are over budget
    even without growth (the budget was lowered), pools above their minimum shrink, largest first.
    Returns the adjusted targets and, per pool changed, the guard that fired.
    """
    out = dict(targets)
    fired: dict[str, str] = {}
    if budget_gpus is None:
        return out, fired

    def cost_now() -> int:
        return sum(budget_cost_gpus(specs[p], states[p], out[p]) for p in out)

    # Growth first: it must fit alongside what is still paid for (draining replicas included).
    while cost_now() > budget_gpus:
        growers = [p for p in out if out[p] > states[p].target]
        if not growers:
            break
        p = max(growers, key=lambda n: (out[n] - states[n].target, n))
        out[p] -= 1
        fired[p] = "budget_cut_growth"
    # Then the steady state: targets alone must fit (a lowered budget shrinks the largest pools first).
    while sum(out[p] * specs[p].gpus_per_replica for p in out) > budget_gpus:
        shrinkable = [p for p in out if out[p] > specs[p].min_replicas]
        if not shrinkable:
            break
        p = max(shrinkable, key=lambda n: (out[n] * specs[n].gpus_per_replica, n))
        out[p] -= 1
        fired[p] = "budget_shrink"
    return out, fired
