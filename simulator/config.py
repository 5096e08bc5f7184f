"""Configuration and vocabulary of the cluster simulator: pools, modes, replica states, drop reasons."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_COLD_START_S",
    "DEFAULT_FLIP_DELAY_S",
    "DEFAULT_KV_LINK_GBPS_PER_GPU",
    "DROP_CODES",
    "ClusterConfig",
    "DropReason",
    "Mode",
    "PerfLike",
    "Pool",
    "ReplicaState",
    "TraceLike",
    "pools_by_name",
]

DEFAULT_COLD_START_S = 300.0
"""Cold start of a 70B replica: node already up, container start, ~140 GB of bf16 weights loaded and
CUDA graphs captured. See docs/simulator.md for the derivation."""

DEFAULT_FLIP_DELAY_S = 30.0
"""Role flip after the replica has drained: reconfigure the serving engine, no weight reload."""

DEFAULT_KV_LINK_GBPS_PER_GPU = 400.0
"""InfiniBand NDR (ConnectX-7), one 400 Gb/s NIC per H100 as on DGX H100; a replica of tp GPUs has tp links."""


class Mode(StrEnum):
    """How the cluster serves: prefill and decode in separate pools, or both on every replica."""

    DISAGG = "disagg"
    COLOCATED = "colocated"


class Pool(StrEnum):
    """A group of interchangeable replicas with one role."""

    PREFILL = "prefill"
    DECODE = "decode"
    COLOCATED = "colocated"


class ReplicaState(StrEnum):
    """Lifecycle of a replica; every state but STOPPED is paid for."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class DropReason(StrEnum):
    """Why a request was not served."""

    EXCEEDS_KV_CAPACITY = "exceeds_kv_capacity"
    NO_REPLICA = "no_replica_timeout"
    EXCEEDS_CONTEXT_WINDOW = "exceeds_context_window"
    """Prompt + output longer than the model's context window: a real engine refuses it at admission (vLLM
    answers 400 "maximum context length is N tokens")."""


DROP_CODES: dict[DropReason, int] = {
    DropReason.EXCEEDS_KV_CAPACITY: 1,
    DropReason.NO_REPLICA: 2,
    DropReason.EXCEEDS_CONTEXT_WINDOW: 3,
}
"""Compact per-request drop codes (0: not dropped)."""


class PerfLike(Protocol):
    """What the simulator needs from a performance model (pdscale.simulator.perf.PerfModel satisfies it)."""

    @property
    def model(self) -> str: ...
    @property
    def gpus_per_replica(self) -> int: ...
    @property
    def kv_bytes_per_token(self) -> int: ...
    @property
    def max_kv_tokens(self) -> int: ...
    def prefill_ms(self, total_tokens: float, attn_sq_tokens: float, num_seqs: int) -> float: ...
    def decode_step_ms(self, batch: int, context_tokens: float) -> float: ...


class TraceLike(Protocol):
    """What the simulator needs from a trace (pdscale.simulator.traces.Trace satisfies it): arrays sorted by arrival."""

    @property
    def arrival_s(self) -> npt.NDArray[np.float64]: ...
    @property
    def input_tokens(self) -> npt.NDArray[np.int64]: ...
    @property
    def output_tokens(self) -> npt.NDArray[np.int64]: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Everything that defines a simulated cluster. Initial replicas are ready at t=0.

    Attributes:
        perf: performance model of one replica (all pools use the same model, parallelism and dtype).
        mode: DISAGG (prefill pool -> KV transfer -> decode pool) or COLOCATED (one pool, chunked prefill).
        prefill_replicas, decode_replicas: initial pool sizes in DISAGG mode.
        colocated_replicas: initial pool size in COLOCATED mode.
        cold_start_s: time from scale-up to ready (paid for).
        flip_delay_s: time from the end of a drain to ready in the other role (paid for).
        kv_link_gbps_per_gpu: KV transfer bandwidth per GPU; a replica sends over gpus_per_replica links.
        prefill_token_budget: prompt tokens per prefill batch in the prefill pool.
        prefill_chunk_tokens: largest piece of one prompt per prefill batch (longer prompts are chunked).
        colocated_token_budget: prompt tokens mixed into one colocated iteration (Sarathi-style chunk).
        max_running_seqs: sequences a replica decodes at once (vLLM max_num_seqs).
        max_model_len: longest prompt + output a replica accepts (vLLM ``--max-model-len``); None: the
            performance model's context window (``context_window_tokens``), or no limit when it has none.
        no_replica_timeout_s: a request that waits this long with no ready replica in its pool is dropped.
        sample_interval_s: period of the utilisation and demand samples in the result.
        ttft_slo_ms, itl_slo_ms: targets for SLO attainment (mean ITL per request).
    """

    perf: PerfLike
    mode: Mode = Mode.DISAGG
    prefill_replicas: int = 0
    decode_replicas: int = 0
    colocated_replicas: int = 0
    cold_start_s: float = DEFAULT_COLD_START_S
    flip_delay_s: float = DEFAULT_FLIP_DELAY_S
    kv_link_gbps_per_gpu: float = DEFAULT_KV_LINK_GBPS_PER_GPU
    prefill_token_budget: int = 8192
    prefill_chunk_tokens: int = 8192
    colocated_token_budget: int = 2048
    max_running_seqs: int = 256
    max_model_len: int | None = None
    no_replica_timeout_s: float = 600.0
    sample_interval_s: float = 60.0
    ttft_slo_ms: float = 2000.0
    itl_slo_ms: float = 100.0

    def __post_init__(self) -> None:
        """Reject values that cannot describe a cluster, naming the field."""
        for name in ("prefill_replicas", "decode_replicas", "colocated_replicas"):
            if getattr(self, name) < 0:
                raise ValueError(f"ClusterConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("cold_start_s", "flip_delay_s", "no_replica_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ClusterConfig.{name} must be a finite number >= 0, got {value}")
        for name in (
            "kv_link_gbps_per_gpu",
            "sample_interval_s",
            "ttft_slo_ms",
            "itl_slo_ms",
            "prefill_token_budget",
            "prefill_chunk_tokens",
            "colocated_token_budget",
            "max_running_seqs",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ClusterConfig.{name} must be a finite number > 0, got {value}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"ClusterConfig.max_model_len must be >= 1 or None, got {self.max_model_len}")
        if self.mode is Mode.DISAGG and self.colocated_replicas:
            raise ValueError("ClusterConfig.colocated_replicas must be 0 in disagg mode")
        if self.mode is Mode.COLOCATED and (self.prefill_replicas or self.decode_replicas):
            raise ValueError("ClusterConfig.prefill_replicas/decode_replicas must be 0 in colocated mode")

    @property
    def pools(self) -> tuple[Pool, ...]:
        """The pools this mode has."""
        if self.mode is Mode.DISAGG:
            return (Pool.PREFILL, Pool.DECODE)
        return (Pool.COLOCATED,)

    @property
    def kv_link_bytes_per_s(self) -> float:
        """KV transfer bandwidth of one prefill replica in bytes per second."""
        return self.kv_link_gbps_per_gpu * 1e9 / 8.0 * self.perf.gpus_per_replica


def pools_by_name(pools: Mapping[str, Any]) -> dict[str, Pool]:
    """Map a controller's pool names to simulator pools by each pool's `role` (or its name when it has none)."""
    mapping: dict[str, Pool] = {}
    for name, spec in pools.items():
        role = str(getattr(spec, "role", name))
        try:
            mapping[name] = Pool(role)
        except ValueError:
            roles = ", ".join(p.value for p in Pool)
            raise ValueError(f"pool {name!r}: role {role!r} is not one of {roles}") from None
    if len(set(mapping.values())) != len(mapping):
        raise ValueError(f"the simulator needs one pool per role, got {sorted(mapping)}")
    return mapping
