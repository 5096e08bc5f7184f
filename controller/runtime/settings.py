"""Settings: one YAML file -> one validated root object of typed sections.

Errors name the file, the field path and what is wrong (``SettingsError``). Secrets come from the
environment or from files, never from the YAML itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec
from pdscale.forecasting.fitting import FitMode

__all__ = [
    "ActuatorSettings",
    "AdminSettings",
    "BudgetSettings",
    "CapacitySettings",
    "ExternalChange",
    "ForecastingSettings",
    "GuardSection",
    "LeaderElectionMode",
    "LeaderElectionSettings",
    "LoggingSettings",
    "MetricsSettings",
    "PolicySettings",
    "PoolSettings",
    "SLOSettings",
    "SecretRef",
    "Settings",
    "SettingsError",
    "SimulatorSettings",
    "StateSettings",
    "TLSSettings",
    "TelemetrySettings",
    "load_settings",
    "parse_settings",
]


class SettingsError(ValueError):
    """A settings file is unreadable or invalid; the message names file, field and problem."""


class _Section(BaseModel):
    # No inf or NaN anywhere: `stale_after_s: .inf` would switch the stale-data hold off without a word.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (YAML's default keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys, naming the key and both lines."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)


def _listen_address(value: str) -> str:
    """``host:port`` with a port in 0..65535 (0 picks a free one); anything else would bind some random port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port with a port between 0 and 65535 (0: any free port)")
    if host.startswith("[") != host.endswith("]"):
        raise ValueError(f"{value!r}: an IPv6 host goes in brackets, like [::1]:50051")
    return value


ListenAddress = Annotated[str, AfterValidator(_listen_address)]


class SecretRef(_Section):
    """A secret read from an environment variable or a file (first one set wins)."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.env is None and self.file is None:
            raise ValueError("a secret needs 'env' or 'file'")
        return self

    def resolve(self) -> str:
        """The secret's value; raises SettingsError when neither source yields one."""
        if self.env and os.environ.get(self.env):
            return os.environ[self.env].strip()
        if self.file is not None:
            try:
                value = self.file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(f"secret file {self.file}: {exc.strerror}") from exc
            if not value:  # an empty secret must not turn authentication off
                raise SettingsError(f"secret file {self.file} is empty")
            return value
        raise SettingsError(f"secret: environment variable {self.env} is not set")


class SLOSettings(_Section):
    """Latency targets."""

    ttft_ms: float = Field(1000.0, gt=0)
    itl_ms: float = Field(50.0, gt=0)
    quantile: float = Field(0.99, ge=0.5, lt=1.0)

    def to_slo(self) -> SLO:
        """As the core type."""
        return SLO(ttft_ms=self.ttft_ms, itl_ms=self.itl_ms, quantile=self.quantile)


class BudgetSettings(_Section):
    """The GPUs all pools together may hold (None: no budget)."""

    max_gpus: int | None = Field(None, ge=1)


class PoolSettings(_Section):
    """One pool: its size bounds, lifecycle costs, and how the actuator and metrics source find it."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    role: PoolRole
    gpus_per_replica: int = Field(ge=1)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    cold_start_s: float = Field(300.0, ge=0)
    drain_timeout_s: float = Field(600.0, ge=0)
    actuator: dict[str, Any] = Field(default_factory=dict)
    """Actuator-specific address of this pool (deployment name, ASG name ...)."""
    selector: dict[str, Any] = Field(default_factory=dict)
    """Metrics-source-specific selection of this pool (labels, pod regex ...)."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        if self.initial_replicas is not None and not (self.min_replicas <= self.initial_replicas <= self.max_replicas):
            raise ValueError("initial_replicas must lie within [min_replicas, max_replicas]")
        return self

    def to_spec(self, model: str) -> PoolSpec:
        """As the core type."""
        return PoolSpec(
            name=self.name,
            role=self.role,
            gpus_per_replica=self.gpus_per_replica,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            cold_start_s=self.cold_start_s,
            drain_timeout_s=self.drain_timeout_s,
            model=model,
        )


class PolicySettings(_Section):
    """Which policy plugin decides, with its parameters (validated by the plugin)."""

    name: str = "slo"
    params: dict[str, Any] = Field(default_factory=dict)


class ForecastingSettings(_Section):
    """Which forecaster plugin each signal uses."""

    model: str = "last_value"
    """The default since the benchmark measured the ensemble saving < 5% GPU-hours on multi-day traffic
    (docs/forecasting.md, "What the forecaster is worth"); ``ensemble`` remains available."""
    params: dict[str, Any] = Field(default_factory=dict)
    backfill_days: float = Field(8.0, ge=0.0, le=35.0)
    """Days of each forecast signal ``pdscale serve`` reads back from the metrics source at start-up (Prometheus
    range queries) for the seasonal floor: a week and a day by default; 0 turns it off."""
    fits: FitMode = FitMode.PROCESS
    """Where ``pdscale serve`` runs statsmodels and scikit-learn refits: ``process`` (a spawned worker, off the
    tick and off its interpreter), ``thread`` or ``inline``. Replays (simulate, bench, plan) always fit inline, so
    their results are reproducible."""


class GuardSection(_Section):
    """Guard tunables (see pdscale.controller.core.guards)."""

    max_step_up: int = Field(4, ge=1)
    max_step_down: int = Field(1, ge=1)
    scale_up_window_s: float = Field(0.0, ge=0)
    scale_down_window_s: float = Field(300.0, ge=0)
    stale_after_s: float = Field(120.0, gt=0)
    zero_traffic_window_s: float = Field(900.0, ge=0)
    hold_while_starting: bool = True

    def to_guard_settings(self) -> GuardSettings:
        """As the core type."""
        return GuardSettings(**self.model_dump())


class MetricsSettings(_Section):
    """Where live metrics come from."""

    source: str = "simulator"
    params: dict[str, Any] = Field(default_factory=dict)


class ExternalChange(StrEnum):
    """What to do when someone else changes a target pdscale set."""

    ADOPT = "adopt"
    HOLD = "hold"


class ActuatorSettings(_Section):
    """What pdscale scales, and how carefully."""

    name: str = "simulator"
    params: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    on_external_change: ExternalChange = ExternalChange.ADOPT
    backoff_base_s: float = Field(10.0, gt=0)
    backoff_max_s: float = Field(600.0, gt=0)


class CapacitySettings(_Section):
    """The performance profile the capacity model is built from."""

    profile: str | None = None
    """A profile file (JSON or CSV), or ``builtin:<model>/tp<N>`` for the simulator's model exported as a profile."""
    params: dict[str, Any] = Field(default_factory=dict)


class SimulatorSettings(_Section):
    """The embedded cluster simulator (used when metrics.source / actuator.name are ``simulator``)."""

    trace: str = "bundled:azure-conv"
    rate_curve: str | None = None
    mode: str = Field("disagg", pattern=r"^(disagg|colocated)$")
    speedup: float = Field(60.0, gt=0)
    """Simulated seconds per wall-clock second in ``serve``/``demo``."""
    duration_s: float | None = Field(None, gt=0)
    rate_scale: float = Field(1.0, gt=0)
    """Multiplies the request rate. With ``rate_curve``, the curve's rate; without, the trace's own: arrival
    times are compressed by the factor and the trace repeated to fill its original window (same lengths,
    same duration, ``rate_scale`` times the requests per second)."""
    seed: int = 0
    slowdown: float = Field(1.0, gt=0)
    """Hardware slower (>1) or faster (<1) than the profile the controller is given."""
    params: dict[str, Any] = Field(default_factory=dict)


# Fields once accepted and never used: a config that still sets one is told so, not silently ignored.
_REMOVED_FIELDS = {
    "simulator.exporter_listen": (
        "no longer supported (it was never used); delete it. The simulator's vLLM-named exporter is "
        "pdscale.simulator.exporter.SimExporter (docs/simulator.md)"
    ),
}


class TLSSettings(_Section):
    """TLS for the admin API; ``client_ca`` turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class AdminSettings(_Section):
    """The gRPC admin API."""

    enabled: bool = True
    listen: ListenAddress = "127.0.0.1:50051"
    token: SecretRef | None = None
    auth_read_only: bool = False
    """Whether read-only calls need the token too."""
    tls: TLSSettings | None = None
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)

    @model_validator(mode="after")
    def _read_auth_needs_token(self) -> Self:
        if self.auth_read_only and self.token is None:
            raise ValueError("auth_read_only needs a token: set admin.token, or drop auth_read_only")
        return self


class TelemetrySettings(_Section):
    """The daemon's own /metrics, /healthz and /readyz."""

    enabled: bool = True
    listen: ListenAddress = "127.0.0.1:9464"


class StateSettings(_Section):
    """Where decisions, overrides and pause state persist."""

    path: Path | None = None
    """SQLite file; None keeps state in memory (lost on restart)."""
    retention_days: float = Field(30.0, gt=0)
    max_decisions: int = Field(100_000, ge=100)


class LeaderElectionMode(StrEnum):
    """How replicas of the daemon agree on the one that actuates."""

    OFF = "off"
    """One daemon per state file (the state file's lock refuses a second one)."""
    LEASE = "lease"
    """A coordination.k8s.io/v1 Lease (client-go leaderelection semantics); standbys keep their admin API up."""
    FILE = "file"
    """One host: the state file's lock; a standby waits for it instead of refusing to start."""


class LeaderElectionSettings(_Section):
    """Leader election: only the leader actuates; see pdscale.controller.runtime.leader."""

    mode: LeaderElectionMode = LeaderElectionMode.OFF
    identity: str | None = None
    """This daemon's holder identity; default: $POD_NAME (else the host name) and the process id."""
    lease_name: str = Field("pdscale", min_length=1, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str | None = None
    """The Lease's namespace; default: the pod's own (service account namespace file), else ``default``."""
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool | None = None
    """None: in-cluster when KUBERNETES_SERVICE_HOST is set and no kubeconfig is given."""
    lease_duration_s: float = Field(15.0, gt=0)
    """How long a standby waits, from the last change of the Lease it saw, before it takes over."""
    renew_deadline_s: float = Field(10.0, gt=0)
    """A leader that has not renewed for this long stops actuating (before its Lease can expire elsewhere)."""
    retry_period_s: float = Field(2.0, gt=0)
    """Between two attempts to acquire or renew."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        # client-go's rules: leaseDuration > renewDeadline > 1.2 * retryPeriod (its jitter factor).
        if self.renew_deadline_s >= self.lease_duration_s:
            raise ValueError(
                f"renew_deadline_s ({self.renew_deadline_s}) must be below lease_duration_s ({self.lease_duration_s}):"
                " a leader must stop actuating before its lease can expire"
            )
        if self.renew_deadline_s <= 1.2 * self.retry_period_s:
            raise ValueError(
                f"renew_deadline_s ({self.renew_deadline_s}) must exceed 1.2 x retry_period_s ({self.retry_period_s})"
            )
        return self


class LoggingSettings(_Section):
    """Log level and renderer (``auto``: JSON when not a TTY)."""

    level: str = Field("info", pattern=r"^(debug|info|warning|error)$")
    format: str = Field("auto", pattern=r"^(auto|json|console)$")


class Settings(_Section):
    """The root of the settings file."""

    model: str = "llama-3.1-70b"
    tick_s: float = Field(30.0, ge=0.05, le=3600)
    """At least 50 ms (a shorter tick cannot finish its metric reads and actuator calls) and at most an hour (a
    slower loop could not react within any SLO window; ``.inf`` is refused). Any tick keeps
    forecaster history bounded: below 30 s it is averaged onto 30 s steps (``assembly.MIN_FORECAST_STEP_S``)."""
    slo: SLOSettings = Field(default_factory=SLOSettings)  # type: ignore[arg-type]
    budget: BudgetSettings = Field(default_factory=BudgetSettings)  # type: ignore[arg-type]
    pools: list[PoolSettings] = Field(min_length=1)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    forecasting: ForecastingSettings = Field(default_factory=ForecastingSettings)  # type: ignore[arg-type]
    guards: GuardSection = Field(default_factory=GuardSection)  # type: ignore[arg-type]
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    actuator: ActuatorSettings = Field(default_factory=ActuatorSettings)  # type: ignore[arg-type]
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)  # type: ignore[arg-type]
    admin: AdminSettings = Field(default_factory=AdminSettings)  # type: ignore[arg-type]
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    state: StateSettings = Field(default_factory=StateSettings)  # type: ignore[arg-type]
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(dupes)}")
        if self.leader_election.mode is LeaderElectionMode.FILE and self.state.path is None:
            raise ValueError("leader_election.mode 'file' locks the state file: set state.path")
        if self.budget.max_gpus is not None:
            floor = sum(p.min_replicas * p.gpus_per_replica for p in self.pools)
            if floor > self.budget.max_gpus:
                raise ValueError(f"budget.max_gpus ({self.budget.max_gpus}) is below the pools' minimum ({floor} GPUs)")
        return self

    def pool_specs(self) -> dict[str, PoolSpec]:
        """Pool name to core spec."""
        return {p.name: p.to_spec(self.model) for p in self.pools}


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and loc in _REMOVED_FIELDS:
            msg = _REMOVED_FIELDS[loc]
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see examples/simulator.yaml)"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_settings(data: Mapping[str, Any] | None, source: str = "<settings>") -> Settings:
    """Validate a mapping (already parsed YAML); raises SettingsError naming ``source`` and each bad field."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        raise SettingsError(_format_errors(source, exc)) from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a YAML settings file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{p}: cannot read settings file: {exc.strerror}") from None
    try:
        data = safe_load_unique(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SettingsError(f"{p}{where}: invalid YAML: {problem}") from None
    return parse_settings(data, str(p))
