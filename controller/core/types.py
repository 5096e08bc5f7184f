"""Core value types that cross layers: pools, SLOs, observations, forecasts, decisions.

Everything here is a frozen dataclass or an Enum; nothing does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum

from pdscale.forecasting.base import Forecast, Signal

__all__ = [
    "ROLE_SIGNALS",
    "SLO",
    "DataState",
    "Decision",
    "Direction",
    "ErrorClass",
    "Forecast",
    "Observation",
    "Override",
    "OverrideMode",
    "PoolDecision",
    "PoolObservation",
    "PoolRole",
    "PoolSpec",
    "PoolState",
    "ReplicaInfo",
    "ReplicaState",
    "RoleFlip",
    "Signal",
    "Signals",
    "lead_time_s",
]


class PoolRole(StrEnum):
    """What a pool's replicas do."""

    PREFILL = "prefill"
    DECODE = "decode"
    COLOCATED = "colocated"


class ReplicaState(StrEnum):
    """Lifecycle of one replica. Starting, ready and draining replicas are all paid for."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class DataState(StrEnum):
    """Whether a pool's metrics can be trusted this tick."""

    OK = "ok"
    MISSING = "missing"
    STALE = "stale"


class Direction(StrEnum):
    """What a decision does to a pool."""

    UP = "up"
    DOWN = "down"
    HOLD = "hold"
    FLIP = "flip"


class ErrorClass(StrEnum):
    """How an actuation failure should be retried (cluster-autoscaler style)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    OUT_OF_RESOURCES = "out_of_resources"


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """Static description of one pool, from the settings file."""

    name: str
    role: PoolRole
    gpus_per_replica: int
    min_replicas: int
    max_replicas: int
    cold_start_s: float = 300.0
    drain_timeout_s: float = 600.0
    model: str = ""

    def __post_init__(self) -> None:
        if self.gpus_per_replica < 1:
            raise ValueError(f"pool {self.name!r}: gpus_per_replica must be >= 1")
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"pool {self.name!r}: need 0 <= min_replicas ({self.min_replicas}) "
                f"<= max_replicas ({self.max_replicas})"
            )


ROLE_SIGNALS: Mapping[PoolRole, tuple[Signal, ...]] = {
    PoolRole.PREFILL: (Signal.PREFILL_TPS, Signal.REQUEST_RATE),
    PoolRole.DECODE: (Signal.DECODE_CONCURRENCY, Signal.KV_TOKENS, Signal.REQUEST_RATE),
    PoolRole.COLOCATED: (Signal.PREFILL_TPS, Signal.REQUEST_RATE, Signal.DECODE_CONCURRENCY, Signal.KV_TOKENS),
}
"""The demand signals each role is forecast on and sized from (the one table; loop, policies, telemetry and
the oracle all read it)."""


def lead_time_s(cold_start_s: float, tick_s: float) -> float:
    """How far ahead a scale-up decided now takes effect: the pool's cold start plus one control tick.

    The one definition of the lead time: forecasts are asked for this horizon, forecasters score it, and
    policies size for demand this far ahead."""
    return cold_start_s + tick_s


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency targets: TTFT for the prefill side, ITL for the decode side, at a quantile."""

    ttft_ms: float
    itl_ms: float
    quantile: float = 0.99

    def __post_init__(self) -> None:
        if not (self.ttft_ms > 0 and self.itl_ms > 0):
            raise ValueError("SLO ttft_ms and itl_ms must be > 0")
        if not 0.5 <= self.quantile < 1.0:
            raise ValueError(f"SLO quantile must be in [0.5, 1), got {self.quantile}")


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica as an actuator reports it."""

    id: str
    pool: str
    state: ReplicaState
    since_s: float = 0.0
    load: float = 0.0
    """Work it holds (running + waiting requests); the least-loaded go first on scale-down."""


@dataclass(frozen=True, slots=True)
class PoolState:
    """What a pool has right now, per its actuator."""

    pool: str
    target: int
    ready: int
    starting: int = 0
    draining: int = 0

    @property
    def active(self) -> int:
        """Replicas that are or will be serving (ready + starting)."""
        return self.ready + self.starting

    @property
    def paid(self) -> int:
        """Replicas that cost GPUs now (starting, ready or draining)."""
        return self.ready + self.starting + self.draining

    @staticmethod
    def from_replicas(pool: str, target: int, replicas: list[ReplicaInfo]) -> PoolState:
        """Count replicas by lifecycle state."""
        counts = dict.fromkeys(ReplicaState, 0)
        for r in replicas:
            counts[r.state] += 1
        return PoolState(
            pool=pool,
            target=target,
            ready=counts[ReplicaState.READY],
            starting=counts[ReplicaState.STARTING],
            draining=counts[ReplicaState.DRAINING],
        )


@dataclass(frozen=True, slots=True)
class Signals:
    """Per-pool serving signals. ``None`` means *missing*; 0.0 is a real zero.

    Demand is what *arrives*: ``arrival_rate_per_s`` and ``prompt_arrival_tokens_per_s`` (from arrival counters,
    or completions plus queue growth where an engine exports none). ``request_rate_per_s`` and
    ``prompt_tokens_per_s`` are what the pool *served*: a saturated pool serves its own capacity, so sizing from
    them would confirm an undersized fleet. :meth:`demand` prefers arrivals.
    """

    prompt_tokens_per_s: float | None = None
    """Prompt tokens processed per second."""
    generation_tokens_per_s: float | None = None
    request_rate_per_s: float | None = None
    """Requests completed per second."""
    arrival_rate_per_s: float | None = None
    """Requests arriving per second."""
    prompt_arrival_tokens_per_s: float | None = None
    """Prompt tokens arriving per second."""
    isl_mean_tokens: float | None = None
    isl_p90_tokens: float | None = None
    isl_p99_tokens: float | None = None
    """The prompt-length p99 (from the prompt-length histogram): the long prompts that fill the TTFT tail."""
    osl_mean_tokens: float | None = None
    osl_p90_tokens: float | None = None
    running_requests: float | None = None
    waiting_requests: float | None = None
    kv_usage_ratio: float | None = None
    kv_tokens_in_use: float | None = None
    ttft_mean_ms: float | None = None
    """Mean TTFT over the rate window (histogram sum / count: exact, unlike bucket-interpolated quantiles)."""
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    itl_mean_ms: float | None = None
    """Mean inter-token latency over the rate window, token-weighted (histogram sum / count)."""
    itl_p50_ms: float | None = None
    itl_p99_ms: float | None = None
    ready_replicas: float | None = None
    prefill_utilization: float | None = None
    decode_utilization: float | None = None
    prefill_batch_tokens_mean: float | None = None
    """Prompt tokens per prefill batch (engine step), mean over the window (vLLM: vllm:iteration_tokens_total)."""
    prefill_batch_ms_mean: float | None = None
    """Duration of a prefill batch, mean over the window (the simulator: busy time / batches; vLLM: the mean of
    vllm:request_prefill_time_seconds, which on a prefill-only instance is the batch a request ran in)."""
    prefix_cache_hit_ratio: float | None = None
    """Share of prompt tokens served from the prefix cache over the window (vLLM: vllm:prefix_cache_hits_total /
    vllm:prefix_cache_queries_total); None where the engine reports no prefix cache."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (not math.isfinite(v) or v < 0):
                raise ValueError(f"signal {f.name} must be a finite non-negative number or None, got {v!r}")

    def as_dict(self) -> dict[str, float | None]:
        """Field name to value, for logs and the audit trail."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def mean_running_requests(self) -> float | None:
        """Running sequences averaged over the rate window when the counters allow it, else the gauge now.

        Every running sequence emits one token per iteration, so generated tokens/s x mean time per token is
        the time-averaged number running (Little's law, exact over the window); the gauge is one instant and
        swings by tens of percent between scrapes.
        """
        if self.generation_tokens_per_s is not None and self.itl_mean_ms is not None:
            return self.generation_tokens_per_s * self.itl_mean_ms / 1e3
        return self.running_requests

    def demand(self, signal: Signal) -> float | None:
        """The observed demand of a forecast signal: arrivals where known, else what was served."""
        if signal is Signal.PREFILL_TPS:
            arriving = self.prompt_arrival_tokens_per_s
            return arriving if arriving is not None else self.prompt_tokens_per_s
        if signal is Signal.REQUEST_RATE:
            return self.arrival_rate_per_s if self.arrival_rate_per_s is not None else self.request_rate_per_s
        if signal is Signal.DECODE_CONCURRENCY:
            running = self.mean_running_requests
            if running is None:
                return None
            return running + (self.waiting_requests or 0.0)
        return self.kv_tokens_in_use


@dataclass(frozen=True, slots=True)
class PoolObservation:
    """One pool's signals at ``sample_time_s``, with an explicit trust state."""

    pool: str
    state: DataState
    signals: Signals = field(default_factory=Signals)
    sample_time_s: float | None = None
    reason: str = ""

    @staticmethod
    def missing(pool: str, reason: str) -> PoolObservation:
        """An observation that carries no usable data, and why."""
        return PoolObservation(pool=pool, state=DataState.MISSING, reason=reason)

    def staleness_s(self, now: float) -> float | None:
        """Age of the sample at ``now``; ``None`` when there is no sample."""
        return None if self.sample_time_s is None else max(0.0, now - self.sample_time_s)


@dataclass(frozen=True, slots=True)
class Observation:
    """All pools' observations from one fetch."""

    time_s: float
    pools: Mapping[str, PoolObservation]

    def get(self, pool: str) -> PoolObservation:
        """The pool's observation, or an explicit missing one."""
        return self.pools.get(pool) or PoolObservation.missing(pool, "pool absent from metrics source")


@dataclass(frozen=True, slots=True)
class RoleFlip:
    """Move one replica from one pool to another in place (drain, switch role, no weight reload)."""

    from_pool: str
    to_pool: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class PoolDecision:
    """The target chosen for one pool this tick, and why."""

    pool: str
    previous: int
    proposed: int
    target: int
    reason: str
    guards: tuple[str, ...] = ()
    estimate: Mapping[str, float] = field(default_factory=dict)

    @property
    def direction(self) -> Direction:
        """Up, down or hold relative to the previous target."""
        if self.target > self.previous:
            return Direction.UP
        if self.target < self.previous:
            return Direction.DOWN
        return Direction.HOLD


@dataclass(frozen=True, slots=True)
class Decision:
    """One tick's joint decision over all pools."""

    time_s: float
    policy: str
    pools: Mapping[str, PoolDecision]
    flips: tuple[RoleFlip, ...] = ()
    held: bool = False
    """True when the whole tick held (missing data, policy error, pause)."""

    def targets(self) -> dict[str, int]:
        """Pool name to chosen target."""
        return {name: d.target for name, d in self.pools.items()}


class OverrideMode(StrEnum):
    """How an operator override constrains a pool's target."""

    EXACT = "exact"
    MIN = "min"
    MAX = "max"


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's pin on a pool's replicas, optionally expiring at ``expires_s``."""

    pool: str
    mode: OverrideMode
    replicas: int
    expires_s: float | None = None
    reason: str = ""

    def active(self, now: float) -> bool:
        """Whether the override still applies at ``now``."""
        return self.expires_s is None or now < self.expires_s
