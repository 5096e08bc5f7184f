"""Cluster simulator: prefill pool -> KV transfer -> decode pool, or colocated serving, replaying a trace.

Never imports the controller or any actuator; `pdscale.controller.sources.simulator` and
`pdscale.actuators.simulator` adapt it to the control loop.
"""

from __future__ import annotations

from pdscale.simulator.cluster import Cluster
from pdscale.simulator.config import ClusterConfig, DropReason, Mode, Pool, ReplicaState
from pdscale.simulator.metrics import PoolMetrics
from pdscale.simulator.replica import ReplicaView
from pdscale.simulator.results import PoolSample, SimResult

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
