# ruff: noqa: PLC0415 - boto3 is imported lazily, so pdscale runs without it
"""AWS Auto Scaling groups as node groups: a pool's replicas become GPU nodes (e.g. 8 GPUs per p5.48xlarge).

``set_target(pool, replicas)`` records a goal; the node count walks toward it through ``plan_nodes`` (headroom,
the group's MinSize/MaxSize enforced here, never below what running replicas occupy, at most
``max_step_nodes`` per change and one change per ``min_interval_s`` by timestamps). Every call advances the
walk, so a paced goal is reached over later ticks without the loop asking again.

Scale-in never lets AWS choose: the group's instances are protected from scale-in (``SetInstanceProtection``),
and a step down first lowers the desired count by instances not launched yet, then picks pending instances,
then the least-loaded running ones; each running one is drained through its engine (``drain``: in-flight count
from its ``/metrics``, bounded by the pool's ``drain_timeout_s``) and terminated with
``TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=True)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from pdscale.actuators.base import (
    ActuatorParams,
    CallLog,
    ExternalChangeDetector,
    parse_params,
    parse_pool_addresses,
    retrying,
    unknown_pool,
)
from pdscale.actuators.drain import Drainer, EngineDrain, EngineTarget, pool_drain_timeout_s, result
from pdscale.actuators.nodegroups import (
    GPUS_PER_INSTANCE,
    Node,
    NodeGroup,
    NodeSizing,
    NodeState,
    choose_nodes,
    plan_nodes,
)
from pdscale.controller.core.protocols import ActuationError, DrainResult
from pdscale.controller.core.types import ErrorClass, ReplicaInfo, ReplicaState

__all__ = ["AsgProvider", "AwsAsgActuator", "AwsAsgParams", "AwsAsgPoolAddress", "classify_aws_error"]

log = structlog.get_logger(__name__)

BACKEND = "aws_asg"

_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "ScalingActivityInProgress", "ResourceContention",
                    "RequestLimitExceeded", "ServiceUnavailable", "InternalFailure"}  # fmt: skip
_OOR_CODES = {"LimitExceeded", "InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded"}

_NODE_STATES: Mapping[str, NodeState] = {
    "Pending": NodeState.PENDING,
    "Pending:Wait": NodeState.PENDING,
    "Pending:Proceed": NodeState.PENDING,
    "InService": NodeState.RUNNING,
}


def classify_aws_error(code: str) -> ErrorClass:
    """How to retry an AWS error code."""
    if code in _OOR_CODES:
        return ErrorClass.OUT_OF_RESOURCES
    if code in _TRANSIENT_CODES:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


class AwsAsgPoolAddress(BaseModel):
    """``pools[].actuator`` for AWS: the ASG holding the pool's nodes and how they are sized."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asg: str = Field(min_length=1)
    gpus_per_node: int | None = Field(None, ge=1)
    """Default: from the instance type (p5.48xlarge: 8)."""
    gpus_per_replica: int | None = Field(None, ge=1)
    """Default: the pool's gpus_per_replica."""
    headroom_nodes: int = Field(0, ge=0)
    max_step_nodes: int = Field(4, ge=1)
    min_interval_s: float = Field(60.0, ge=0)
    protect: bool = True
    """Protect the group's instances from scale-in, so only pdscale picks (and drains) the instance that goes."""
    drain: EngineDrain | None = None
    """Where each instance's engine reports in-flight requests (``$address``: its private IP); None: no wait."""


class AwsAsgParams(ActuatorParams):
    """``actuator.params`` for AWS Auto Scaling."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    """For a local endpoint (moto) or a VPC endpoint."""


class AsgProvider:
    """NodeGroupProvider over boto3's autoscaling client."""

    def __init__(self, client: Any, retry: Callable[[Callable[[], Any], str, str], Any]) -> None:
        self._client = client
        self._retry = retry

    def _call(self, group: str, op: str, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        def once() -> Any:
            try:
                return fn()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                raise ActuationError(f"aws {op} {group}: {code}: {exc}", classify_aws_error(code)) from None
            except BotoCoreError as exc:
                raise ActuationError(f"aws {op} {group}: {exc}", ErrorClass.TRANSIENT) from None

        return self._retry(once, op, group)

    def describe(self, group: str) -> NodeGroup:
        """The ASG's desired capacity, bounds and instances."""
        got = self._call(
            group, "describe", lambda: self._client.describe_auto_scaling_groups(AutoScalingGroupNames=[group])
        )
        groups = got.get("AutoScalingGroups") or []
        if not groups:
            raise ActuationError(f"aws: auto scaling group {group!r} not found", ErrorClass.PERMANENT)
        g = groups[0]
        nodes = tuple(
            Node(
                id=str(i["InstanceId"]),
                state=_NODE_STATES.get(str(i.get("LifecycleState")), NodeState.TERMINATING),
                instance_type=str(i.get("InstanceType", "")),
                protected=bool(i.get("ProtectedFromScaleIn")),
            )
            for i in g.get("Instances") or []
            if i.get("LifecycleState") != "Terminated"
        )
        itype = next((n.instance_type for n in nodes if n.instance_type), "")
        return NodeGroup(
            name=group,
            desired=int(g["DesiredCapacity"]),
            min_size=int(g["MinSize"]),
            max_size=int(g["MaxSize"]),
            nodes=nodes,
            instance_type=itype or self._template_type(g),
        )

    def _template_type(self, g: Mapping[str, Any]) -> str:
        lt = g.get("LaunchTemplate") or (g.get("MixedInstancesPolicy") or {}).get("LaunchTemplate", {}).get(
            "LaunchTemplateSpecification"
        )
        return str((lt or {}).get("InstanceType", ""))

    def protect(self, group: str, instance_ids: list[str]) -> None:
        """SetInstanceProtection(ProtectedFromScaleIn=True): the group's own scale-in never picks these."""
        self._call(
            group,
            "protect",
            lambda: self._client.set_instance_protection(
                AutoScalingGroupName=group, InstanceIds=instance_ids, ProtectedFromScaleIn=True
            ),
        )

    def terminate(self, group: str, instance_id: str) -> None:
        """TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity: this node goes, none replaces it."""
        self._call(
            group,
            "terminate",
            lambda: self._client.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=True
            ),
        )

    def set_desired(self, group: str, nodes: int) -> None:
        """SetDesiredCapacity, honouring cooldowns."""
        self._call(
            group,
            "set_desired",
            lambda: self._client.set_desired_capacity(
                AutoScalingGroupName=group, DesiredCapacity=nodes, HonorCooldown=False
            ),
        )


@dataclass(slots=True)
class _Walk:
    goal_replicas: int
    written_nodes: int
    last_change_s: float | None


class AwsAsgActuator:
    """Pools as Auto Scaling groups of GPU nodes; see the module docstring."""

    requires: tuple[str, ...] = ("boto3",)
    """Modules this actuator imports when built; ``pdscale check-config`` names the extra that installs them."""
    extra = "aws"

    @staticmethod
    def check_settings(pools: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        """Validate the params and every pool's ``actuator`` block without connecting (``check-config``)."""
        parse_params(AwsAsgParams, params, BACKEND)
        parse_pool_addresses(AwsAsgPoolAddress, pools, BACKEND)

    def __init__(self, pools: Mapping[str, Any], params: Mapping[str, Any], env: Any = None) -> None:
        import boto3

        self.params = parse_params(AwsAsgParams, params, BACKEND)
        self.addresses = parse_pool_addresses(AwsAsgPoolAddress, pools, BACKEND)
        self._gpus_per_replica = {
            name: int(self.addresses[name].gpus_per_replica or _attr(spec, "gpus_per_replica", 8))
            for name, spec in pools.items()
        }
        resources = getattr(env, "resources", {}) or {}
        self._clock: Callable[[], float] = resources.get("clock") or time.time
        self._occupied: Callable[[str], int] | None = resources.get("occupied_replicas")
        self._engine_url: Callable[[str, str], str] | None = resources.get("engine_url")
        self._drain_timeout = {name: pool_drain_timeout_s(spec) for name, spec in pools.items()}
        self.drainer = Drainer(BACKEND)
        self._drain_results: dict[str, DrainResult] = {}
        self._ec2: Any = resources.get("ec2_client")
        self.calls = CallLog(BACKEND, dry_run=self.params.dry_run)
        self.external = ExternalChangeDetector(BACKEND)
        policy = self.params.retry_policy()
        client = resources.get("autoscaling_client") or boto3.client(
            "autoscaling", region_name=self.params.region, endpoint_url=self.params.endpoint_url
        )
        self.provider = AsgProvider(
            client, lambda fn, op, group: retrying(fn, policy, backend=BACKEND, op=op, pool=group)
        )
        self._walks: dict[str, _Walk] = {}

    def _addr(self, pool: str) -> AwsAsgPoolAddress:
        try:
            return self.addresses[pool]
        except KeyError:
            raise unknown_pool(BACKEND, pool, self.addresses) from None

    def _sizing(self, pool: str, group: NodeGroup) -> NodeSizing:
        a = self._addr(pool)
        gpn = a.gpus_per_node or GPUS_PER_INSTANCE.get(group.instance_type)
        if gpn is None:
            raise ActuationError(
                f"aws pool {pool}: cannot tell GPUs per node of instance type {group.instance_type!r}; "
                f"set pools[{pool}].actuator.gpus_per_node",
                ErrorClass.PERMANENT,
            )
        return NodeSizing(
            gpus_per_node=gpn,
            gpus_per_replica=self._gpus_per_replica[pool],
            headroom_nodes=a.headroom_nodes,
            max_step_nodes=a.max_step_nodes,
            min_interval_s=a.min_interval_s,
        )

    def _advance(self, pool: str, group: NodeGroup) -> NodeGroup:
        """Take the next paced step toward the pool's goal, unless someone else moved the group."""
        walk = self._walks.get(pool)
        if walk is None:
            return group
        if group.desired != walk.written_nodes:
            self.external.observe(pool, group.desired)
            del self._walks[pool]  # someone else owns the count now; the Reconciler decides adopt or hold
            return group
        sizing = self._sizing(pool, group)
        occupied = self._occupied(pool) if self._occupied is not None else 0
        now = self._clock()
        plan = plan_nodes(
            sizing,
            replicas=walk.goal_replicas,
            occupied_replicas=occupied,
            current_nodes=group.desired,
            min_nodes=group.min_size,
            max_nodes=group.max_size,
            last_change_s=walk.last_change_s,
            now=now,
        )
        if plan.nodes == group.desired:
            return group
        if self.params.dry_run:
            self.calls.would(pool, "set_desired", current=group.desired, nodes=plan.nodes, reason=plan.reason)
            return group
        if plan.nodes < group.desired:
            self._scale_in(pool, group, group.desired - plan.nodes)
        else:
            with self.calls.call(pool, "set_desired", nodes=plan.nodes, previous=group.desired, reason=plan.reason):
                self.provider.set_desired(group.name, plan.nodes)
        walk.written_nodes, walk.last_change_s = plan.nodes, now
        self.external.applied_now(pool, plan.nodes)
        return NodeGroup(group.name, plan.nodes, group.min_size, group.max_size, group.nodes, group.instance_type)

    def _protect(self, pool: str, group: NodeGroup) -> None:
        todo = [n.id for n in group.nodes if not n.protected and n.state is not NodeState.TERMINATING]
        if todo and self._addr(pool).protect and not self.params.dry_run:
            with self.calls.call(pool, "protect", instances=todo):
                self.provider.protect(group.name, todo)

    def _scale_in(self, pool: str, group: NodeGroup, count: int) -> None:
        """Remove ``count`` nodes: not launched yet, then pending, then drained least-loaded running ones."""
        live = [n for n in group.nodes if n.state is not NodeState.TERMINATING]
        unlaunched = min(count, max(0, group.desired - len(live)))
        if unlaunched:
            with self.calls.call(pool, "set_desired", nodes=group.desired - unlaunched, previous=group.desired):
                self.provider.set_desired(group.name, group.desired - unlaunched)
        cfg = self._addr(pool).drain
        urls: dict[str, str] = {}

        def load(node: Node) -> float:
            if cfg is None:
                return 0.0
            urls[node.id] = self._engine(pool, node.id, cfg)
            n = self.drainer.inflight(cfg, urls[node.id])
            return math.inf if math.isnan(n) else n

        victims = choose_nodes(live, count - unlaunched, load)
        running = [n.id for n in victims if n.state is NodeState.RUNNING]
        drained, cut = list(running), 0
        timed_out: list[str] = []
        if cfg is not None and running:
            targets = [EngineTarget(i, urls.get(i) or self._engine(pool, i, cfg)) for i in running]
            drained, timed_out, cut = self.drainer.drain(cfg, pool, targets, self._drain_timeout.get(pool, 600.0))
        for node in victims:
            with self.calls.call(pool, "terminate", instance=node.id, state=node.state.value):
                self.provider.terminate(group.name, node.id)
        cancelled = unlaunched + len(victims) - len(running)
        self._drain_results[pool] = result(pool, cancelled, drained, timed_out, cut)

    def _engine(self, pool: str, instance_id: str, cfg: EngineDrain) -> str:
        if self._engine_url is not None:
            return str(self._engine_url(pool, instance_id)).rstrip("/")
        address = instance_id
        if "$address" in cfg.url:
            if self._ec2 is None:
                import boto3

                self._ec2 = boto3.client("ec2", region_name=self.params.region, endpoint_url=self.params.endpoint_url)
            got = self._ec2.describe_instances(InstanceIds=[instance_id])
            for r in got.get("Reservations") or []:
                for i in r.get("Instances") or []:
                    address = str(i.get("PrivateIpAddress") or address)
        return Template(cfg.url).safe_substitute(address=address, replica=instance_id, pool=pool).rstrip("/")

    def take_drain_result(self, pool: str) -> DrainResult | None:
        """What the last scale-in of ``pool`` did (cancelled, drained, timed out), once."""
        return self._drain_results.pop(pool, None)

    def target_size(self, pool: str) -> int:
        """The goal this actuator walks toward, or the replicas the group's desired nodes hold."""
        with self.calls.call(pool, "target_size") as extra:
            group = self._advance(pool, self.provider.describe(self._addr(pool).asg))
            walk = self._walks.get(pool)
            sizing = self._sizing(pool, group)
            n = walk.goal_replicas if walk else sizing.replicas_on(group.desired - sizing.headroom_nodes)
            extra.update(replicas=n, nodes=group.desired)
            return n

    def set_target(self, pool: str, replicas: int) -> None:
        """Set the goal and take the first paced step; more than MaxSize holds is out of resources."""
        if replicas < 0:
            raise ActuationError(f"aws: negative target {replicas} for {pool}", ErrorClass.PERMANENT)
        with self.calls.call(pool, "set_target", replicas=replicas) as extra:
            group = self.provider.describe(self._addr(pool).asg)
            sizing = self._sizing(pool, group)
            need = sizing.nodes_for(replicas) + sizing.headroom_nodes
            if need > group.max_size:
                raise ActuationError(
                    f"aws pool {pool}: {replicas} replicas need {need} nodes; group {group.name} MaxSize is "
                    f"{group.max_size}",
                    ErrorClass.OUT_OF_RESOURCES,
                )
            walk = self._walks.get(pool)
            if walk is not None and walk.written_nodes != group.desired:
                walk = None  # changed elsewhere: start over from what is there
            if walk is None:
                walk = _Walk(goal_replicas=replicas, written_nodes=group.desired, last_change_s=None)
            if self.params.dry_run:
                plan_goal = max(need, group.min_size)
                self.calls.would(pool, "set_target", replicas=replicas, nodes=plan_goal, current=group.desired)
                extra["result"] = "dry_run"
                return
            walk.goal_replicas = replicas
            self._walks[pool] = walk
            self._protect(pool, group)
            after = self._advance(pool, group)
            extra.update(nodes=after.desired, goal_nodes=need)

    def replicas(self, pool: str) -> Sequence[ReplicaInfo]:
        """Replicas the group's nodes hold: pending nodes starting, in service ready, leaving draining."""
        with self.calls.call(pool, "replicas") as extra:
            group = self.provider.describe(self._addr(pool).asg)
            sizing = self._sizing(pool, group)
            order = {NodeState.RUNNING: 0, NodeState.PENDING: 1, NodeState.TERMINATING: 2}
            nodes = sorted(group.nodes, key=lambda n: (order[n.state], n.id))
            out: list[ReplicaInfo] = []
            if sizing.gpus_per_replica < sizing.gpus_per_node:
                per = sizing.gpus_per_node // sizing.gpus_per_replica
                for node in nodes:
                    out += [ReplicaInfo(f"{node.id}/{i}", pool, _state(node.state)) for i in range(per)]
            else:
                k = math.ceil(sizing.gpus_per_replica / sizing.gpus_per_node)
                for i in range(0, len(nodes) - k + 1, k):
                    chunk = nodes[i : i + k]
                    worst = max((n.state for n in chunk), key=lambda s: order[s])
                    out.append(ReplicaInfo("+".join(n.id for n in chunk), pool, _state(worst)))
            extra["count"] = len(out)
            return out


def _state(state: NodeState) -> ReplicaState:
    return {
        NodeState.PENDING: ReplicaState.STARTING,
        NodeState.RUNNING: ReplicaState.READY,
        NodeState.TERMINATING: ReplicaState.DRAINING,
    }[state]


def _attr(spec: Any, name: str, default: int) -> int:
    if isinstance(spec, Mapping):
        return int(spec.get(name, default))
    return int(getattr(spec, name, default))
