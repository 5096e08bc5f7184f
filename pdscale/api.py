"""The public plugin API: everything a policy, actuator, metrics-source or forecaster plugin needs.

Plugin authors import from this module only; the modules behind it may move between releases, these names do
not. Plugins register through entry points (groups ``pdscale.policies``, ``pdscale.actuators``,
``pdscale.metrics_sources``, ``pdscale.forecasters``), the same way pdscale's built-ins do.

Factories:
- policy: ``factory(params: Mapping[str, Any]) -> Policy``; validate ``params`` with :func:`validate_params`.
- forecaster: ``factory(**params) -> Forecaster``.
- actuator / metrics source: ``factory(pools: Mapping[str, PoolSettings], params: Mapping[str, Any],
  env: PluginEnv)`` returning an :class:`Actuator` / :class:`MetricsSource`.
"""

from __future__ import annotations

from pdscale.controller.core.capacity import Correction, Workload
from pdscale.controller.core.protocols import (
    ActuationError,
    Actuator,
    CapacityEstimate,
    CapacityModel,
    MetricsSource,
    Policy,
    PolicyContext,
    Proposal,
    SupportsCancelPending,
    SupportsDrain,
    SupportsRoleFlip,
)
from pdscale.controller.core.types import (
    SLO,
    DataState,
    ErrorClass,
    Forecast,
    Observation,
    PoolObservation,
    PoolRole,
    PoolSpec,
    PoolState,
    ReplicaInfo,
    ReplicaState,
    RoleFlip,
    Signal,
    Signals,
)
from pdscale.controller.policies.params import Param, validate_params
from pdscale.controller.runtime.plugins import PluginEnv, PluginError, PluginGroup
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.forecasting.base import Forecaster

__all__ = [
    "SLO",
    "ActuationError",
    "Actuator",
    "CapacityEstimate",
    "CapacityModel",
    "Correction",
    "DataState",
    "ErrorClass",
    "Forecast",
    "Forecaster",
    "MetricsSource",
    "Observation",
    "Param",
    "PluginEnv",
    "PluginError",
    "PluginGroup",
    "Policy",
    "PolicyContext",
    "PoolObservation",
    "PoolRole",
    "PoolSettings",
    "PoolSpec",
    "PoolState",
    "Proposal",
    "ReplicaInfo",
    "ReplicaState",
    "RoleFlip",
    "Signal",
    "Signals",
    "SupportsCancelPending",
    "SupportsDrain",
    "SupportsRoleFlip",
    "Workload",
    "validate_params",
]
