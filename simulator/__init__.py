"""Cluster simulator: prefill pool -> KV transfer -> decode pool, or colocated serving, replaying a trace.

Never imports the controller or any actuator; `controller.sources.simulator` and `actuators.simulator` adapt
it to the control loop.
"""

from __future__ import annotations

from simulator.cluster import Cluster
from simulator.config import ClusterConfig, DropReason, Mode, Pool, ReplicaState
from simulator.metrics import PoolMetrics
from simulator.replica import ReplicaView
from simulator.results import PoolSample, SimResult

__all__ = [
    "Cluster",
    "ClusterConfig",
    "DropReason",
    "Mode",
    "Pool",
    "PoolMetrics",
    "PoolSample",
    "ReplicaState",
    "ReplicaView",
    "SimResult",
]
