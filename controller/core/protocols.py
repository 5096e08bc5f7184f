"""The interfaces that connect layers: metrics sources, actuators and their capabilities, policies.

Shapes follow DESIGN.md. Optional actuator capabilities are narrow protocols checked with TypeGuards,
so a policy or the loop can ask "can this actuator flip roles?" without knowing which actuator it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, runtime_checkable

from pdscale.controller.core.types import (
    SLO,
    ErrorClass,
    Forecast,
    PoolObservation,
    PoolSpec,
    PoolState,
    ReplicaInfo,
    RoleFlip,
    Signal,
    lead_time_s,
)

if TYPE_CHECKING:  # capacity.py implements CapacityModel and imports this module; types only, no cycle at run time
    from pdscale.controller.core.capacity import CapacityParams, Correction, Profile, Workload
    from pdscale.forecasting.seasonal import SeasonalView

__all__ = [
    "ActuationError",
    "Actuator",
    "CapacityEstimate",
    "CapacityModel",
    "DrainResult",
    "MetricsSource",
    "Policy",
    "PolicyContext",
    "Proposal",
    "ReportsDrains",
    "SupportsCancelPending",
    "SupportsDrain",
    "SupportsRoleFlip",
    "can_cancel_pending",
    "can_drain",
    "can_flip_roles",
    "take_drain_result",
]


class ActuationError(Exception):
    """An actuator call failed; ``error_class`` says how to retry."""

    def __init__(self, message: str, error_class: ErrorClass = ErrorClass.TRANSIENT) -> None:
        super().__init__(message)
        self.error_class = error_class


@runtime_checkable
class MetricsSource(Protocol):
    """Reads live serving metrics. Missing, empty or NaN data is an explicit state, never a zero."""

    def fetch(self, now: float) -> Mapping[str, PoolObservation]:
        """One observation per configured pool, sampled as close to ``now`` as the source allows."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class Actuator(Protocol):
    """Scales pools. Desired-state and idempotent: ``set_target(p, n)`` twice is the same as once."""

    def target_size(self, pool: str) -> int:
        """The replica count currently requested for ``pool`` (whoever requested it)."""
        ...

    def set_target(self, pool: str, replicas: int) -> None:
        """Request ``replicas`` for ``pool``. Scale-down cancels starting replicas before draining ready ones."""
        ...

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """Replicas of ``pool`` with their lifecycle states."""
        ...


@runtime_checkable
class SupportsRoleFlip(Protocol):
    """Actuators that can move a replica between prefill and decode in place (drain, switch, no reload)."""

    def flip_roles(self, flip: RoleFlip) -> None:
        """Start moving ``flip.count`` replicas from ``flip.from_pool`` to ``flip.to_pool``."""
        ...


@runtime_checkable
class SupportsDrain(Protocol):
    """Actuators that can drain chosen replicas (finish in-flight work, take no new work)."""

    def drain(self, pool: str, replica_ids: Sequence[str]) -> None:
        """Drain these replicas and remove them once empty."""
        ...


@runtime_checkable
class SupportsCancelPending(Protocol):
    """Actuators that can cancel capacity that is not running yet."""

    def cancel_pending(self, pool: str, count: int) -> int:
        """Cancel up to ``count`` starting replicas; returns how many were cancelled."""
        ...


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What one scale-down did to the replicas it removed (an actuator's own account, for the decision record).

    Attributes:
        pool: the pool scaled down.
        cancelled: starting replicas removed before any ready one (they held no requests).
        drained: ready replicas removed after their in-flight requests finished.
        timed_out: ready replicas removed at ``drain_timeout_s`` with requests still in flight.
        cut_inflight: in-flight requests those timed-out replicas still had when removed.
        deferred: replicas of the requested reduction left for a later call (e.g. a starting replica became
            ready while others drained, so removing it now would cut its requests).
    """

    pool: str
    cancelled: int = 0
    drained: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = ()
    cut_inflight: int = 0
    deferred: int = 0

    @property
    def outcome(self) -> str:
        """``drain_timeout`` when a replica was removed with requests in flight, else ``drained``."""
        return "drain_timeout" if self.timed_out else "drained"

    def summary(self) -> str:
        """One line for logs, Events and the decision record."""
        parts = [self.outcome]
        if self.timed_out:
            parts.append(f"{self.cut_inflight} in-flight requests cut on {', '.join(self.timed_out)}")
        if self.drained:
            parts.append(f"drained {', '.join(self.drained)}")
        if self.cancelled:
            parts.append(f"cancelled {self.cancelled} starting")
        if self.deferred:
            parts.append(f"{self.deferred} deferred")
        return "; ".join(parts)


@runtime_checkable
class ReportsDrains(Protocol):
    """Actuators whose ``set_target`` drains replicas and can say what the last scale-down did."""

    def take_drain_result(self, pool: str) -> DrainResult | None:
        """The result of the last scale-down of ``pool`` not yet taken (then forgotten), or None."""
        ...


def take_drain_result(actuator: object, pool: str) -> DrainResult | None:
    """The actuator's last unreported drain result for ``pool``, when it keeps one."""
    take = getattr(actuator, "take_drain_result", None)
    if not callable(take):
        return None
    got = take(pool)
    return got if isinstance(got, DrainResult) else None


def can_flip_roles(actuator: object) -> TypeGuard[SupportsRoleFlip]:
    """Whether ``actuator`` can flip replica roles."""
    return callable(getattr(actuator, "flip_roles", None))


def can_drain(actuator: object) -> TypeGuard[SupportsDrain]:
    """Whether ``actuator`` can drain chosen replicas."""
    return callable(getattr(actuator, "drain", None))


def can_cancel_pending(actuator: object) -> TypeGuard[SupportsCancelPending]:
    """Whether ``actuator`` can cancel starting replicas."""
    return callable(getattr(actuator, "cancel_pending", None))


@dataclass(frozen=True, slots=True)
class CapacityEstimate:
    """Replicas a pool needs for a demand at its SLO, with the latency the model predicts there."""

    replicas: int
    predicted_ttft_ms: float | None = None
    predicted_itl_ms: float | None = None
    utilization: float | None = None
    reason: str = ""


class CapacityModel(Protocol):
    """Turns demand into replicas at an SLO, and predicts latency at a size (perf profile + queueing).

    This is the whole interface the built-in policies use: sizing, the predictions online calibration compares
    with observed latency, and the profile and parameters the model was built from. ``workload`` is the request
    shape to size for (None: derived from ``demand``); ``correction`` scales the profile's step times by
    observed/predicted (calibration). :class:`pdscale.controller.core.capacity.ProfileCapacityModel` is the
    built-in implementation.
    """

    @property
    def profile(self) -> Profile:
        """The per-replica step-time tables the model interpolates."""
        ...

    @property
    def params(self) -> CapacityParams:
        """Sizing parameters (headrooms, defaults, KV reservation)."""
        ...

    def replicas_needed(
        self,
        pool: PoolSpec,
        demand: Mapping[Signal, float],
        slo: SLO,
        *,
        workload: Workload | None = None,
        correction: Correction | None = None,
    ) -> CapacityEstimate:
        """Replicas ``pool`` needs to serve ``demand`` within ``slo``."""
        ...

    def predict_ttft_mean_ms(
        self, replicas: int, demand: Mapping[Signal, float], w: Workload, corr: Correction | None = None
    ) -> float:
        """Mean TTFT of a prefill pool of ``replicas`` at this demand (``inf`` when it has none)."""
        ...

    def predict_prefill_busy_share(
        self, replicas: int, demand: Mapping[Signal, float], w: Workload, corr: Correction | None = None
    ) -> float:
        """Share of time each prefill replica computes at this demand (> 1: overloaded)."""
        ...

    def predict_itl_ms(self, replicas: int, concurrency: float, w: Workload, corr: Correction | None = None) -> float:
        """Decode step time with ``concurrency`` sequences over ``replicas``."""
        ...

    def decode_batch(self, itl_ms: float, w: Workload, corr: Correction | None = None) -> int:
        """The largest batch one decode replica runs within ``itl_ms`` whose KV fits."""
        ...

    def prefill_throughput_tps(self, isl_tokens: float, corr: Correction | None = None) -> float:
        """Prompt tokens per second one prefill replica sustains at prompts of ``isl_tokens``."""
        ...

    def decode_throughput_tps(self, itl_ms: float, w: Workload, corr: Correction | None = None) -> float:
        """Output tokens per second one decode replica sustains within ``itl_ms``."""
        ...


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """Everything a policy may use to decide all pools of one model jointly.

    Attributes:
        now_s: the tick's time; policies never read a clock.
        tick_s: the control interval.
        pools: static pool specs by name.
        states: replica counts per pool as the actuator reports them (ready, starting, draining, target).
        observations: this tick's metrics per pool (check ``state`` before trusting ``signals``).
        forecasts: per pool, per signal, the forecast at that pool's lead time (cold start + tick).
        slo: latency targets.
        budget_gpus: GPUs all pools together may hold, or None for no budget.
        capacity: the capacity model, when one is configured.
        supports_role_flip: whether the actuator can flip a replica's role in place.
        state: the policy's own state, as it returned it last tick (empty on the first tick).
        params: the policy's validated parameters.
        seasonal: per pool, per signal, the signal's history over the last week and a day (what the forecasters
            were fed, plus any start-up backfill), read by seasonal floors (``forecasting.seasonal``).
    """

    now_s: float
    tick_s: float
    pools: Mapping[str, PoolSpec]
    states: Mapping[str, PoolState]
    observations: Mapping[str, PoolObservation]
    forecasts: Mapping[str, Mapping[Signal, Forecast]]
    slo: SLO
    budget_gpus: int | None = None
    capacity: CapacityModel | None = None
    supports_role_flip: bool = False
    state: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    seasonal: Mapping[str, Mapping[Signal, SeasonalView]] = field(default_factory=dict)

    def lead_time_s(self, pool: str) -> float:
        """How far ahead a scale-up decided now takes effect: cold start plus one tick."""
        return lead_time_s(self.pools[pool].cold_start_s, self.tick_s)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A policy's answer: desired replicas per pool with a reason each, optional flips, and its new state."""

    targets: Mapping[str, int]
    reasons: Mapping[str, str] = field(default_factory=dict)
    flips: tuple[RoleFlip, ...] = ()
    estimates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)
    counts_starting: bool = False
    """True when the targets are sized from demand with starting replicas counted as capacity (they are part of
    the current target), so raising a target while replicas start answers a new need instead of repeating a
    scale-up; the ``hold_while_starting`` guard then lets it through. Policies that size from *ready*
    replicas (HPA-style ratios) leave it False and are held while replicas start."""


@runtime_checkable
class Policy(Protocol):
    """A scaling policy plugin: context in, proposal out. Pure; bounds and delays are applied outside.

    A policy class that never reads ``ctx.forecasts`` may say so with a class attribute
    ``uses_forecasts = False``; ``pdscale bench`` then runs it with the cheapest forecaster.
    """

    name: str

    def decide(self, ctx: PolicyContext) -> Proposal:
        """Desired replicas for every pool in ``ctx.pools``."""
        ...
