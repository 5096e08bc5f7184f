"""A MetricsSource reading vLLM, SGLang or Dynamo metrics from Prometheus' HTTP API (instant queries).

Per pool and tick it runs one instant query per signal (``pdscale.controller.sources.promql`` presets, each overridable)
and turns the answers into ``pdscale.controller.core.types.Signals``. Robustness follows the KEDA Prometheus scaler:

- an empty, multi-series, NaN or Inf answer to a *required* signal makes the pool MISSING, with a reason that
  names the signal and the query; never a zero. Other signals are left ``None`` and listed in the reason;
- zero traffic is not missing data: a rate of exactly 0 is a real zero, and the NaN that ``0/0`` means and
  ``histogram_quantile`` give while no request arrives becomes ``None`` for those signals only;
- ``sample_time_s`` is the oldest sample timestamp the pool's series carry (``timestamp()``), mapped onto the
  caller's clock, so the loop's stale-data guard holds on data Prometheus stopped receiving;
- every HTTP request has a timeout and bounded retries (tenacity); a Prometheus that keeps failing has its
  client rebuilt once, then is backed off exponentially (``health()`` reports all of it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pdscale.controller.core.types import DataState, PoolObservation, PoolRole, Signal, Signals
from pdscale.controller.runtime.settings import SecretRef
from pdscale.controller.sources.prometheus_history import read_history
from pdscale.controller.sources.promql import (
    DEFAULT_REQUIRED,
    FRESHNESS,
    PRESETS,
    SIGNAL_KINDS,
    LabelNames,
    PoolSelector,
    SignalKind,
    matchers,
    render,
    render_selector,
    template_error,
)
from pdscale.controller.sources.promql import Answer as _Answer
from pdscale.controller.sources.promql import parse_instant as _parse

if TYPE_CHECKING:
    from pdscale.controller.runtime.plugins import PluginEnv
    from pdscale.controller.runtime.settings import PoolSettings

__all__ = [
    "PoolSelector",
    "PrometheusConfigError",
    "PrometheusMetricsSource",
    "PrometheusParams",
    "SourceHealth",
    "parse_params",
    "parse_selector",
    "redact_url",
]

log = structlog.get_logger(__name__)

_QUERY_NAMES = frozenset(SIGNAL_KINDS) | {FRESHNESS}


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: logs, reasons and the admin API never show it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return f"{scheme}://{host}{slash}{path}"


class PrometheusConfigError(ValueError):
    """Bad ``metrics.params`` or pool selector; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrometheusParams(_Model):
    """``metrics.params`` of the ``prometheus`` source."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    preset: Literal["vllm", "sglang", "dynamo"] = "vllm"
    queries: dict[str, str | list[str]] = Field(default_factory=dict)
    """Per signal (or ``freshness``): a PromQL template, or alternatives tried in order."""
    rate_window: str = Field("1m", pattern=r"^[0-9]+(ms|s|m|h)$")
    timeout_s: float = Field(5.0, gt=0, le=120)
    retries: int = Field(2, ge=0, le=10)
    retry_wait_s: float = Field(0.2, ge=0, le=30)
    rebuild_after_failures: int = Field(3, ge=1)
    backoff_base_s: float = Field(10.0, gt=0)
    backoff_max_s: float = Field(300.0, gt=0)
    bearer_token: SecretRef | None = None
    tls_verify: bool = True
    ca_file: Path | None = None
    time_scale: float = Field(1.0, gt=0)
    """Caller-clock seconds per Prometheus second: 1 live; the simulator's speedup in accelerated replays."""
    stale_after_s: float | None = Field(None, gt=0)
    """Mark a pool STALE when its newest samples are older than this (caller-clock seconds)."""
    required: dict[PoolRole, list[str]] | None = None
    """Signals without which a pool is MISSING, per role (default: ``promql.DEFAULT_REQUIRED``)."""
    labels: LabelNames = Field(default_factory=LabelNames)
    kv_tokens_per_replica: float | None = Field(None, gt=0)
    """KV capacity per replica in tokens: derives ``kv_tokens_in_use`` when the preset has no query for it."""

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for name, q in v.items():
            if name not in _QUERY_NAMES:
                raise ValueError(f"unknown signal {name!r}; known: {', '.join(sorted(_QUERY_NAMES))}")
            alternatives = [q] if isinstance(q, str) else q
            if not alternatives:
                raise ValueError(f"{name}: needs at least one query")
            for text in alternatives:
                why = template_error(text)
                if why is not None:
                    raise ValueError(f"{name}: {why}: {text!r}")
        return v

    @field_validator("required")
    @classmethod
    def _required(cls, v: dict[PoolRole, list[str]] | None) -> dict[PoolRole, list[str]] | None:
        for role, names in (v or {}).items():
            unknown = sorted(set(names) - set(SIGNAL_KINDS))
            if unknown:
                raise ValueError(f"{role.value}: unknown signal(s) {', '.join(unknown)}")
        return v

    @model_validator(mode="after")
    def _backoff(self) -> PrometheusParams:
        if self.backoff_base_s > self.backoff_max_s:
            raise ValueError(f"backoff_base_s ({self.backoff_base_s}) > backoff_max_s ({self.backoff_max_s})")
        return self


def _format(prefix: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{prefix}.{loc}: {msg}" if loc else f"{prefix}: {msg}")
    return "; ".join(parts)


def parse_params(params: Mapping[str, Any]) -> PrometheusParams:
    """Validate ``metrics.params``; PrometheusConfigError names each bad field."""
    try:
        return PrometheusParams.model_validate(dict(params))
    except ValidationError as exc:
        raise PrometheusConfigError(_format("metrics.params", exc)) from None


def parse_selector(pool: str, selector: Mapping[str, Any]) -> PoolSelector:
    """Validate one pool's ``selector``; PrometheusConfigError names the pool and field."""
    try:
        return PoolSelector.model_validate(dict(selector))
    except ValidationError as exc:
        raise PrometheusConfigError(_format(f"pools[{pool}].selector", exc)) from None


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """The source's own state, for status and telemetry."""

    consecutive_failures: int
    rebuilds: int
    backoff_until_s: float | None
    last_error: str | None
    last_success_s: float | None
    queries_total: int
    query_errors_total: int


class _UnreachableError(Exception):
    """Prometheus did not answer (connection, timeout, 5xx) after the retries."""


class _QueryError(Exception):
    """Prometheus rejected one query (4xx: bad PromQL, execution error)."""


_STATUS_RE = re.compile(r"HTTP Status Code (\d{3})")


def _transient(exc: BaseException) -> bool:
    import requests  # noqa: PLC0415  (requests comes with prometheus-api-client; keep import-time light)

    if isinstance(exc, requests.RequestException | ValueError | KeyError):
        return True
    m = _STATUS_RE.search(str(exc))
    return m is not None and (m.group(1).startswith("5") or m.group(1) in ("408", "429"))


@dataclass(slots=True)
class _Compiled:
    role: PoolRole
    selector: str
    queries: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required: frozenset[str] = frozenset()


class PrometheusMetricsSource:
    """Signals per pool from Prometheus instant queries (factory: ``(pools, params, env)``)."""

    @classmethod
    def check_settings(cls, pools: Mapping[str, PoolSettings], params: Mapping[str, Any]) -> None:
        """Validate ``metrics.params`` and compile every pool's queries without connecting (``check-config``);
        a ``bearer_token`` is checked for shape only (its env/file may exist only where the daemon runs)."""
        parse_params(params)
        cls(pools, {k: v for k, v in params.items() if k != "bearer_token"})

    def __init__(
        self,
        pools: Mapping[str, PoolSettings],
        params: Mapping[str, Any],
        env: PluginEnv | None = None,
    ) -> None:
        del env
        self.params = parse_params(params)
        preset = PRESETS[self.params.preset]
        overrides = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in self.params.queries.items()}
        templates = {**preset.queries, **overrides}
        required_by_role = (
            {r: tuple(v) for r, v in self.params.required.items()} if self.params.required else DEFAULT_REQUIRED
        )
        self._pools: dict[str, _Compiled] = {}
        for name, ps in pools.items():
            sel = parse_selector(name, ps.selector)
            selector = render_selector(matchers(name, sel, self.params.labels, preset.model_label))
            compiled = _Compiled(
                role=ps.role,
                selector=selector,
                required=frozenset(required_by_role.get(ps.role, DEFAULT_REQUIRED[ps.role])),
            )
            for signal, alternatives in templates.items():
                compiled.queries[signal] = tuple(render(t, selector, self.params.rate_window) for t in alternatives)
            missing_q = sorted(s for s in compiled.required if s not in compiled.queries)
            if missing_q:
                raise PrometheusConfigError(
                    f"metrics.params.queries: pool {name!r} requires {', '.join(missing_q)} "
                    f"but preset {preset.name!r} has no query for it; add one or change metrics.params.required"
                )
            self._pools[name] = compiled
        self._token = self.params.bearer_token.resolve() if self.params.bearer_token is not None else None
        self._client: Any = None
        self._failures = 0
        self._rebuilt = False
        self._rebuilds = 0
        self._backoff_until: float | None = None
        self._backoffs = 0
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._queries_total = 0
        self._query_errors = 0
        self._retrying = Retrying(
            stop=stop_after_attempt(self.params.retries + 1),
            wait=wait_exponential(multiplier=self.params.retry_wait_s, max=max(self.params.retry_wait_s, 2.0)),
            retry=retry_if_exception(_transient),
            reraise=True,
        )

    # -- client ---------------------------------------------------------------------------------
    def _build_client(self) -> Any:
        import requests  # noqa: PLC0415
        from prometheus_api_client import PrometheusConnect  # noqa: PLC0415
        from urllib3.util.retry import Retry  # noqa: PLC0415

        session = requests.Session()
        session.verify = str(self.params.ca_file) if self.params.ca_file is not None else self.params.tls_verify
        if self.params.bearer_token is not None:
            self._token = self.params.bearer_token.resolve()  # re-read on rebuild: rotated tokens take effect
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        return PrometheusConnect(
            url=self.params.url.rstrip("/"),
            headers=headers,
            session=session,
            retry=Retry(total=0, raise_on_status=False),  # retries are ours (tenacity), bounded and logged
            timeout=self.params.timeout_s,
        )

    def _query(self, promql: str) -> list[Any]:
        if self._client is None:
            self._client = self._build_client()
        self._queries_total += 1
        result: list[Any] = self._retrying(self._client.custom_query, promql, timeout=self.params.timeout_s)
        return result

    def _answer(self, promql: str) -> _Answer:
        try:
            result = self._query(promql)
        except Exception as exc:
            self._query_errors += 1
            if _transient(exc):
                raise _UnreachableError(f"{type(exc).__name__}: {exc}") from exc
            raise _QueryError(f"{type(exc).__name__}: {exc}") from exc
        return _parse(result)

    def _first(self, alternatives: tuple[str, ...]) -> tuple[_Answer, str]:
        """The first alternative that returns series; the first query's answer when none does."""
        first: tuple[_Answer, str] | None = None
        for promql in alternatives:
            try:
                ans = self._answer(promql)
            except _QueryError as exc:
                ans = _Answer(value=None, eval_ts=None, problem=f"query rejected ({exc})")
            if first is None:
                first = (ans, promql)
            if ans.problem is None or not ans.problem.startswith("empty"):
                return ans, promql
        assert first is not None
        return first

    # -- fetch ----------------------------------------------------------------------------------
    def fetch(self, now: float) -> Mapping[str, PoolObservation]:
        """One observation per pool; never raises for Prometheus trouble (pools become MISSING with a reason)."""
        if self._backoff_until is not None and now < self._backoff_until:
            why = (
                f"prometheus backing off until t={self._backoff_until:.0f}s after {self._failures} consecutive "
                f"failures; last error: {self._last_error}"
            )
            return {p: PoolObservation.missing(p, why) for p in self._pools}
        try:
            out = {name: self._observe(name, c, now) for name, c in self._pools.items()}
        except _UnreachableError as exc:
            return self._failed(now, str(exc))
        if self._failures:
            log.info("prometheus_recovered", url=self._shown_url, after_failures=self._failures)
        self._failures, self._rebuilt, self._backoffs, self._backoff_until = 0, False, 0, None
        self._last_success = now
        return out

    def _failed(self, now: float, error: str) -> dict[str, PoolObservation]:
        self._failures += 1
        self._last_error = error
        log.warning("prometheus_unreachable", url=self._shown_url, failures=self._failures, error=error)
        if self._failures >= self.params.rebuild_after_failures:
            if not self._rebuilt:
                self._rebuild()
            else:
                delay = min(self.params.backoff_max_s, self.params.backoff_base_s * 2**self._backoffs)
                self._backoffs += 1
                self._backoff_until = now + delay
                log.warning("prometheus_backoff", url=self._shown_url, failures=self._failures, retry_in_s=delay)
        why = f"prometheus unreachable at {self._shown_url} ({self._failures} consecutive failures): {error}"
        return {p: PoolObservation.missing(p, why) for p in self._pools}

    def _rebuild(self) -> None:
        self._close_client()
        self._rebuilt = True
        self._rebuilds += 1
        log.warning("prometheus_client_rebuilt", url=self._shown_url, failures=self._failures)

    def _observe(self, pool: str, c: _Compiled, now: float) -> PoolObservation:
        values: dict[str, float | None] = {}
        pending_nan: list[str] = []
        problems: dict[str, str] = {}
        short: dict[str, str] = {}
        for signal, kind in SIGNAL_KINDS.items():
            alternatives = c.queries.get(signal)
            if not alternatives:
                continue
            ans, promql = self._first(alternatives)
            if ans.nonfinite and kind in (SignalKind.TRAFFIC, SignalKind.LATENCY):
                pending_nan.append(signal)  # NaN: zero traffic or missing, decided below
                values[signal] = None
                problems[signal] = f"{signal}: {ans.problem} from `{promql}`"
                short[signal] = "NaN: no observations in the window"
            elif ans.problem is not None or ans.value is None:
                values[signal] = None
                problems[signal] = f"{signal}: {ans.problem} from `{promql}`"
                short[signal] = ans.problem or "no value"
            else:
                values[signal] = _scale(kind, ans.value, self.params.time_scale)
        traffic = values.get("request_rate_per_s")
        if traffic is None:
            traffic = values.get("prompt_tokens_per_s")
        zero_traffic = traffic == 0.0
        if zero_traffic:
            for signal in pending_nan:
                problems.pop(signal, None)  # no requests: no mean and no quantile, and that is not missing data
        if (
            values.get("kv_tokens_in_use") is None
            and "kv_tokens_in_use" not in c.queries
            and self.params.kv_tokens_per_replica is not None
            and values.get("kv_usage_ratio") is not None
            and values.get("ready_replicas") is not None
        ):
            values["kv_tokens_in_use"] = (
                values["kv_usage_ratio"] * values["ready_replicas"] * self.params.kv_tokens_per_replica  # type: ignore[operator]
            )
        sample_time, fresh_problem = self._sample_time(c, now)
        if fresh_problem is not None:
            problems[FRESHNESS] = fresh_problem
        missing = [problems[s] for s in (*sorted(c.required), FRESHNESS) if s in problems]
        if missing:
            reason = "prometheus: " + "; ".join(missing)
            log.warning("prometheus_pool_missing", pool=pool, reason=reason)
            return PoolObservation(pool=pool, state=DataState.MISSING, sample_time_s=sample_time, reason=reason)
        notes = [f"{s} ({short[s]})" for s in SIGNAL_KINDS if s in problems]
        reason = ("prometheus: no data for optional " + ", ".join(notes)) if notes else ""
        if zero_traffic:
            reason = ("zero traffic; " + reason) if reason else "zero traffic"
        signals = Signals(**values)  # type: ignore[arg-type]
        state = DataState.OK
        if self.params.stale_after_s is not None and sample_time is not None:
            age = now - sample_time
            if age > self.params.stale_after_s:
                state = DataState.STALE
                reason = f"prometheus: newest samples are {age:.1f}s old (> stale_after_s {self.params.stale_after_s})"
        return PoolObservation(pool=pool, state=state, signals=signals, sample_time_s=sample_time, reason=reason)

    def _sample_time(self, c: _Compiled, now: float) -> tuple[float | None, str | None]:
        alternatives = c.queries.get(FRESHNESS)
        if not alternatives:
            return now, None
        ans, promql = self._first(alternatives)
        if ans.problem is not None or ans.value is None or ans.eval_ts is None:
            return None, f"{FRESHNESS}: {ans.problem} from `{promql}`"
        age_s = max(0.0, ans.eval_ts - ans.value) * self.params.time_scale
        return now - age_s, None

    def history(
        self, pool: str, start_s: float, end_s: float, step_s: float = 60.0
    ) -> dict[Signal, tuple[list[float], list[float | None]]]:
        """``pool``'s forecast signals over a past range, by range queries (``sources.prometheus_history``)."""
        return read_history(self, pool, start_s, end_s, step_s)

    # -- status ---------------------------------------------------------------------------------
    def health(self) -> SourceHealth:
        """Failures, rebuilds, backoff and query counters, for status and telemetry."""
        return SourceHealth(
            consecutive_failures=self._failures,
            rebuilds=self._rebuilds,
            backoff_until_s=self._backoff_until,
            last_error=self._last_error,
            last_success_s=self._last_success,
            queries_total=self._queries_total,
            query_errors_total=self._query_errors,
        )

    def queries(self, pool: str) -> Mapping[str, tuple[str, ...]]:
        """The rendered PromQL per signal for ``pool`` (for docs, debugging and ``pdscale`` diagnostics)."""
        return dict(self._pools[pool].queries)

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing a broken session must not break the loop
                log.debug("prometheus_close_failed", error=str(exc))

    @property
    def _shown_url(self) -> str:
        return redact_url(self.params.url)

    def close(self) -> None:
        """Close the HTTP session."""
        self._close_client()


def _scale(kind: SignalKind, value: float, time_scale: float) -> float:
    if kind is SignalKind.RATE:
        return value / time_scale
    if kind is SignalKind.LATENCY:
        return value * 1000.0
    return value
