"""Wiring: settings + plugin registry -> a ready Reconciler. The only place that connects the layers."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pdscale.controller.core.protocols import Actuator, CapacityModel, MetricsSource, Policy
from pdscale.controller.core.types import Signal, lead_time_s
from pdscale.controller.runtime.loop import Backoff, Reconciler
from pdscale.controller.runtime.plugins import PluginEnv, PluginError, PluginGroup, Registry, UnknownPluginError
from pdscale.controller.runtime.record import Recorder
from pdscale.controller.runtime.settings import ExternalChange, Settings
from pdscale.forecasting.base import Forecaster
from pdscale.forecasting.fitting import FitMode

__all__ = ["Assembly", "build", "forecaster_factory", "validate_plugins"]


@dataclass(slots=True)
class Assembly:
    """Everything ``build`` made, so callers can reach the parts (e.g. close the source on exit)."""

    reconciler: Reconciler
    registry: Registry
    env: PluginEnv


def _accepts(factory: Callable[..., Any], name: str, *, via_kwargs: bool = True) -> bool:
    """Whether ``factory`` takes ``name``: by name, or (``via_kwargs``) through ``**kwargs``."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return name in sig.parameters or (via_kwargs and any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()))


def _is_builtin_forecaster(factory: Callable[..., Any]) -> bool:
    from pdscale.forecasting.online import GridForecaster  # noqa: PLC0415

    return isinstance(factory, type) and issubclass(factory, GridForecaster)


MIN_FORECAST_STEP_S = 30.0
"""The finest resolution forecaster history is kept at, whatever ``tick_s`` is (bounds its memory)."""


def forecaster_factory(
    settings: Settings, registry: Registry, *, fits: FitMode = FitMode.INLINE
) -> Callable[[str, Signal], Forecaster]:
    """A factory making one forecaster per (pool, signal) from ``settings.forecasting``.

    ``fits`` says where the built-in forecasters refit: inline (replays) or off the caller's thread (the daemon).
    """
    factory = registry.load(PluginGroup.FORECASTERS, settings.forecasting.model)
    params = dict(settings.forecasting.params)
    if "fits" not in params and _is_builtin_forecaster(factory):
        params["fits"] = FitMode(fits).value
    if "step_s" not in params and _accepts(factory, "step_s"):
        # History is kept per step: at the tick's own resolution it would grow as 14 days / tick_s (303 MB at
        # 1.5 s). Below MIN_FORECAST_STEP_S the samples are averaged onto steps of that size instead.
        params["step_s"] = max(settings.tick_s, MIN_FORECAST_STEP_S)

    takes_signal = "signal" not in params and _accepts(factory, "signal", via_kwargs=False)

    takes_horizons = "horizons_s" not in params and _is_builtin_forecaster(factory)
    lead_s = {p.name: lead_time_s(p.cold_start_s, settings.tick_s) for p in settings.pools}

    def make(pool: str, signal: Signal) -> Forecaster:
        extra: dict[str, Any] = {}
        if takes_signal:
            # A forecaster that knows its signal may add signal-specific members (the ensemble's Little's-law
            # model for decode concurrency).
            extra["signal"] = signal.value
        if takes_horizons and pool in lead_s:
            # Score (and keep residuals for) the one horizon the loop asks for: the pool's lead time.
            extra["horizons_s"] = (lead_s[pool],)
        try:
            fc: Forecaster = factory(**params, **extra)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"forecaster {settings.forecasting.model!r}: {exc}") from exc
        return fc

    return make


def build_capacity(settings: Settings) -> CapacityModel | None:
    """The capacity model from ``settings.capacity`` (None when no profile is configured)."""
    if settings.capacity.profile is None:
        return None
    try:
        from pdscale.controller.runtime.profile import build_capacity_model  # noqa: PLC0415
    except ImportError as exc:
        raise PluginError(f"capacity.profile is set but the capacity model is unavailable: {exc}") from exc
    model: CapacityModel = build_capacity_model(settings)
    return model


def _prepare_env(settings: Settings, env: PluginEnv) -> None:
    if "simulator" in (settings.actuator.name, settings.metrics.source) and "simulator" not in env.resources:
        try:
            from pdscale.controller.runtime.replay import ensure_cluster  # noqa: PLC0415
        except ImportError as exc:
            raise PluginError(f"the embedded simulator is unavailable: {exc}") from exc
        ensure_cluster(settings, env)


def _check_forecaster(settings: Settings, reg: Registry) -> None:
    """Build one forecaster per signal the first pool's role uses with ``forecasting.params`` (fits inline,
    nothing fitted), so bad params fail here rather than at the daemon's first tick."""
    from pdscale.controller.core.types import ROLE_SIGNALS  # noqa: PLC0415

    make = forecaster_factory(settings, reg)
    pool = settings.pools[0]
    for signal in ROLE_SIGNALS.get(pool.role, (Signal.REQUEST_RATE,)):
        try:
            make(pool.name, signal)
        except UnknownPluginError:
            raise
        except PluginError as exc:
            raise PluginError(f"forecasting.params: {exc}") from None


def validate_plugins(settings: Settings, registry: Registry | None = None) -> None:
    """Fail early (PluginError, a ValueError) when settings name unknown plugins, bad policy params, an
    actuator whose package is not installed (naming the pip extra), or bad actuator params / per-pool blocks.

    Nothing connects: an actuator's ``check_settings(pools, params)``, where it has one, validates offline."""
    reg = registry or Registry()
    try:
        reg.create(PluginGroup.POLICIES, settings.policy.name, settings.policy.params)
    except UnknownPluginError:
        raise
    except PluginError as exc:
        raise PluginError(f"policy.params: {exc}") from None
    _check_forecaster(settings, reg)
    source = reg.load(PluginGroup.METRICS_SOURCES, settings.metrics.source)
    check_source = getattr(source, "check_settings", None)
    if callable(check_source):
        try:
            check_source({p.name: p for p in settings.pools}, settings.metrics.params)
        except Exception as exc:  # any source's own validation error, reported as a settings problem
            field = "" if str(exc).startswith("metrics.") else "metrics.params: "
            raise PluginError(f"metrics source {settings.metrics.source!r}: {field}{exc}") from None
    name = settings.actuator.name
    factory = reg.load(PluginGroup.ACTUATORS, name)
    missing = [m for m in getattr(factory, "requires", ()) if importlib.util.find_spec(m) is None]
    if missing:
        extra = getattr(factory, "extra", "")
        hint = f"pip install 'pdscale[{extra}]'" if extra else f"pip install {' '.join(missing)}"
        raise PluginError(f"actuator {name!r} needs the {', '.join(missing)} package(s), not installed: {hint}")
    check = getattr(factory, "check_settings", None)
    if callable(check):
        try:
            check({p.name: p for p in settings.pools}, settings.actuator.params)
        except Exception as exc:  # any actuator's own validation error, reported as a settings problem
            raise PluginError(f"actuator {name!r}: {exc}") from None


def build(
    settings: Settings,
    *,
    registry: Registry | None = None,
    env: PluginEnv | None = None,
    recorder: Recorder | None = None,
    source: MetricsSource | None = None,
    actuator: Actuator | None = None,
    fits: FitMode = FitMode.INLINE,
) -> Assembly:
    """Build the Reconciler described by ``settings`` (``source``/``actuator`` may be injected).

    ``fits``: where forecaster refits run; the daemon passes ``settings.forecasting.fits``, replays keep them
    inline (reproducible).
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
        forecaster_factory=forecaster_factory(settings, reg, fits=fits),
        budget_gpus=settings.budget.max_gpus,
        capacity=build_capacity(settings),
        guard_settings=settings.guards.to_guard_settings(),
        recorder=recorder,
        dry_run=settings.actuator.dry_run,
        adopt_external_changes=settings.actuator.on_external_change is ExternalChange.ADOPT,
        backoff=Backoff(base_s=settings.actuator.backoff_base_s, max_s=settings.actuator.backoff_max_s),
    )
    return Assembly(reconciler=rec, registry=reg, env=env)
