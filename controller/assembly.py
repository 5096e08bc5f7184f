"""Wiring: settings + plugin registry -> a ready Reconciler. The only place that connects the layers."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.loop import Backoff, Reconciler
from controller.plugins import PluginEnv, PluginError, PluginGroup, Registry
from controller.protocols import Actuator, CapacityModel, MetricsSource, Policy
from controller.record import Recorder
from controller.settings import ExternalChange, Settings
from controller.types import Signal
from forecasting.base import Forecaster

__all__ = ["Assembly", "build", "forecaster_factory", "validate_plugins"]


@dataclass(slots=True)
class Assembly:
    """Everything ``build`` made, so callers can reach the parts (e.g. close the source on exit)."""

    reconciler: Reconciler
    registry: Registry
    env: PluginEnv


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return name in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _is_builtin_forecaster(factory: Callable[..., Any]) -> bool:
    from forecasting.online import GridForecaster  # noqa: PLC0415

    return isinstance(factory, type) and issubclass(factory, GridForecaster)


def _names_param(factory: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def forecaster_factory(
    settings: Settings, registry: Registry, *, background_fits: bool = False
) -> Callable[[str, Signal], Forecaster]:
    """A factory making one forecaster per (pool, signal) from ``settings.forecasting``.

    ``background_fits`` moves the built-in forecasters' refits off the caller's thread (the daemon's tick).
    """
    factory = registry.load(PluginGroup.FORECASTERS, settings.forecasting.model)
    params = dict(settings.forecasting.params)
    if background_fits and "background_fits" not in params and _is_builtin_forecaster(factory):
        params["background_fits"] = True
    if "step_s" not in params and _accepts(factory, "step_s"):
        params["step_s"] = settings.tick_s

    takes_signal = "signal" not in params and _names_param(factory, "signal")

    def make(pool: str, signal: Signal) -> Forecaster:
        del pool
        try:
            # A forecaster that knows its signal may add signal-specific members (the ensemble's Little's-law
            # model for decode concurrency).
            fc: Forecaster = factory(**params, **({"signal": signal.value} if takes_signal else {}))
        except (TypeError, ValueError) as exc:
            raise PluginError(f"forecaster {settings.forecasting.model!r}: {exc}") from exc
        return fc

    return make


def build_capacity(settings: Settings) -> CapacityModel | None:
    """The capacity model from ``settings.capacity`` (None when no profile is configured)."""
    if settings.capacity.profile is None:
        return None
    try:
        from controller.profile import build_capacity_model  # noqa: PLC0415
    except ImportError as exc:
        raise PluginError(f"capacity.profile is set but the capacity model is unavailable: {exc}") from exc
    model: CapacityModel = build_capacity_model(settings)
    return model


def _prepare_env(settings: Settings, env: PluginEnv) -> None:
    if "simulator" in (settings.actuator.name, settings.metrics.source) and "simulator" not in env.resources:
        try:
            from controller.replay import ensure_cluster  # noqa: PLC0415
        except ImportError as exc:
            raise PluginError(f"the embedded simulator is unavailable: {exc}") from exc
        ensure_cluster(settings, env)


def validate_plugins(settings: Settings, registry: Registry | None = None) -> None:
    """Fail early (PluginError, a ValueError) when settings name unknown plugins or bad policy params."""
    reg = registry or Registry()
    reg.create(PluginGroup.POLICIES, settings.policy.name, settings.policy.params)
    reg.load(PluginGroup.FORECASTERS, settings.forecasting.model)
    reg.load(PluginGroup.ACTUATORS, settings.actuator.name)
    reg.load(PluginGroup.METRICS_SOURCES, settings.metrics.source)


def build(
    settings: Settings,
    *,
    registry: Registry | None = None,
    env: PluginEnv | None = None,
    recorder: Recorder | None = None,
    source: MetricsSource | None = None,
    actuator: Actuator | None = None,
    background_fits: bool = False,
) -> Assembly:
    """Build the Reconciler described by ``settings`` (``source``/``actuator`` may be injected).

    ``background_fits``: forecaster refits off the tick (the daemon); replays leave it off (reproducible).
    """
    reg = registry or Registry()
    env = env or PluginEnv()
    pools = {p.name: p for p in settings.pools}
    if source is None or actuator is None:
        _prepare_env(settings, env)
    if source is None:
        source = reg.create(PluginGroup.METRICS_SOURCES, settings.metrics.source, pools, settings.metrics.params, env)
    if actuator is None:
        actuator = reg.create(PluginGroup.ACTUATORS, settings.actuator.name, pools, settings.actuator.params, env)
    policy: Policy = reg.create(PluginGroup.POLICIES, settings.policy.name, settings.policy.params)
    rec = Reconciler(
        pools=settings.pool_specs(),
        source=source,
        actuator=actuator,
        policy=policy,
        policy_params=settings.policy.params,
        slo=settings.slo.to_slo(),
        tick_s=settings.tick_s,
        forecaster_factory=forecaster_factory(settings, reg, background_fits=background_fits),
        budget_gpus=settings.budget.max_gpus,
        capacity=build_capacity(settings),
        guard_settings=settings.guards.to_guard_settings(),
        recorder=recorder,
        dry_run=settings.actuator.dry_run,
        adopt_external_changes=settings.actuator.on_external_change is ExternalChange.ADOPT,
        backoff=Backoff(base_s=settings.actuator.backoff_base_s, max_s=settings.actuator.backoff_max_s),
    )
    return Assembly(reconciler=rec, registry=reg, env=env)
