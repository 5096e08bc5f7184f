"""Cloud node groups behind one small interface: AWS Auto Scaling groups today, GCP MIGs and Azure VMSS next.

A ``NodeGroupProvider`` only reads and writes a group's desired node count; sizing (GPUs to nodes, headroom,
bounds, pacing, never below what running replicas occupy) is the pure ``plan_nodes`` function, shared by
every provider.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = [
    "GPUS_PER_INSTANCE",
    "Node",
    "NodeGroup",
    "NodeGroupProvider",
    "NodePlan",
    "NodeSizing",
    "NodeState",
    "choose_nodes",
    "plan_nodes",
]

GPUS_PER_INSTANCE = {
    "p5.48xlarge": 8,
    "p5e.48xlarge": 8,
    "p5en.48xlarge": 8,
    "p4d.24xlarge": 8,
    "p4de.24xlarge": 8,
    "g6e.48xlarge": 8,
    "g6e.12xlarge": 4,
    "g5.48xlarge": 8,
    "g5.12xlarge": 4,
    "g5.xlarge": 1,
    "a3-highgpu-8g": 8,
    "a3-megagpu-8g": 8,
    "Standard_ND96isr_H100_v5": 8,
}
"""GPUs per instance type for common GPU nodes (AWS, GCP, Azure); others are configured per pool."""


class NodeState(StrEnum):
    """A node's lifecycle, provider-neutral."""

    PENDING = "pending"
    RUNNING = "running"
    TERMINATING = "terminating"


@dataclass(frozen=True, slots=True)
class Node:
    """One instance of a node group."""

    id: str
    state: NodeState
    instance_type: str = ""
    protected: bool = False
    """Protected from the group's own scale-in (so only pdscale picks which node goes)."""


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """A node group as its provider reports it."""

    name: str
    desired: int
    min_size: int
    max_size: int
    nodes: tuple[Node, ...] = ()
    instance_type: str = ""


class NodeGroupProvider(Protocol):
    """Reads and writes one cloud's node groups (AWS ASG, GCP MIG, Azure VMSS)."""

    def describe(self, group: str) -> NodeGroup:
        """The group's desired count, bounds and instances."""
        ...

    def set_desired(self, group: str, nodes: int) -> None:
        """Request ``nodes`` instances (within the group's bounds)."""
        ...


@dataclass(frozen=True, slots=True)
class NodeSizing:
    """How a pool's replicas map to nodes, and how fast the group may change."""

    gpus_per_node: int
    gpus_per_replica: int
    headroom_nodes: int = 0
    max_step_nodes: int = 4
    min_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.gpus_per_node < 1 or self.gpus_per_replica < 1:
            raise ValueError("gpus_per_node and gpus_per_replica must be >= 1")
        if self.max_step_nodes < 1 or self.headroom_nodes < 0 or self.min_interval_s < 0:
            raise ValueError("need max_step_nodes >= 1, headroom_nodes >= 0, min_interval_s >= 0")

    def nodes_for(self, replicas: int) -> int:
        """Nodes that hold ``replicas`` (replicas never straddle nodes unless larger than one), no headroom."""
        if replicas <= 0:
            return 0
        if self.gpus_per_replica >= self.gpus_per_node:
            return replicas * math.ceil(self.gpus_per_replica / self.gpus_per_node)
        return math.ceil(replicas / (self.gpus_per_node // self.gpus_per_replica))

    def replicas_on(self, nodes: int) -> int:
        """Replicas ``nodes`` nodes hold."""
        if nodes <= 0:
            return 0
        if self.gpus_per_replica >= self.gpus_per_node:
            return nodes // math.ceil(self.gpus_per_replica / self.gpus_per_node)
        return nodes * (self.gpus_per_node // self.gpus_per_replica)


@dataclass(frozen=True, slots=True)
class NodePlan:
    """The node count to request now, the goal it walks toward, and why."""

    nodes: int
    goal: int
    reason: str


def plan_nodes(
    sizing: NodeSizing,
    *,
    replicas: int,
    occupied_replicas: int,
    current_nodes: int,
    min_nodes: int,
    max_nodes: int,
    last_change_s: float | None,
    now: float,
) -> NodePlan:
    """The next node count: replicas' nodes + headroom, never below what running replicas occupy,
    within [min_nodes, max_nodes], at most ``max_step_nodes`` away and one change per ``min_interval_s``."""
    goal = sizing.nodes_for(replicas) + sizing.headroom_nodes
    reasons = [f"{replicas} replicas need {sizing.nodes_for(replicas)} nodes + {sizing.headroom_nodes} headroom"]
    floor = sizing.nodes_for(occupied_replicas)
    if goal < floor:
        goal = floor
        reasons.append(f"kept {floor} nodes for {occupied_replicas} running replicas")
    if goal > max_nodes:
        goal = max_nodes
        reasons.append(f"capped at max {max_nodes}")
    if goal < min_nodes:
        goal = min_nodes
        reasons.append(f"raised to min {min_nodes}")
    if goal == current_nodes:
        return NodePlan(current_nodes, goal, "; ".join(reasons))
    if last_change_s is not None and now - last_change_s < sizing.min_interval_s:
        wait = sizing.min_interval_s - (now - last_change_s)
        return NodePlan(current_nodes, goal, "; ".join([*reasons, f"paced: next change in {wait:.0f}s"]))
    step = max(-sizing.max_step_nodes, min(sizing.max_step_nodes, goal - current_nodes))
    if abs(goal - current_nodes) > sizing.max_step_nodes:
        reasons.append(f"step limited to {sizing.max_step_nodes} nodes")
    return NodePlan(current_nodes + step, goal, "; ".join(reasons))


def choose_nodes(nodes: Sequence[Node], count: int, load: Callable[[Node], float]) -> list[Node]:
    """The ``count`` nodes to remove: pending ones first (they serve nothing yet), then the least-loaded running
    ones (``load`` is only asked about running nodes), by id on ties; terminating nodes are never chosen."""
    pending = sorted((n for n in nodes if n.state is NodeState.PENDING), key=lambda n: n.id)
    running = [n for n in nodes if n.state is NodeState.RUNNING]
    chosen = pending[:count]
    if len(chosen) < count:
        chosen += sorted(running, key=lambda n: (load(n), n.id))[: count - len(chosen)]
    return chosen
