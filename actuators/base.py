"""Helpers every actuator shares: error classes, bounded retries, dry-run, call logging, pool addresses.

Nothing here imports an SDK, so any actuator may use it without pulling in another's dependencies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
import tenacity
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pdscale.controller.core.protocols import ActuationError
from pdscale.controller.core.types import ErrorClass

__all__ = [
    "ActuatorParams",
    "CallLog",
    "ExternalChangeDetector",
    "ExternalChangeReport",
    "RetryPolicy",
    "classify_http_status",
    "parse_params",
    "parse_pool_addresses",
    "retrying",
    "unknown_pool",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_OUT_OF_RESOURCES_WORDS = (
    "insufficient",
    "quota",
    "exceeded",
    "out of resources",
    "capacity",
    "unschedulable",
    "limitexceeded",
)


def classify_http_status(status: int, message: str = "") -> ErrorClass:
    """How to retry an HTTP failure: 408/409/425/429/5xx and connection errors (0) are transient.

    Any status whose message speaks of quota or capacity is out-of-resources; other 4xx are permanent.
    """
    text = message.lower()
    if any(word in text for word in _OUT_OF_RESOURCES_WORDS) and status not in (404, 401):
        return ErrorClass.OUT_OF_RESOURCES
    if status == 0 or status in (408, 409, 425, 429) or status >= 500:
        return ErrorClass.TRANSIENT
    return ErrorClass.PERMANENT


def unknown_pool(backend: str, pool: str, known: Mapping[str, object]) -> ActuationError:
    """The permanent error for a pool the actuator was not configured with."""
    names = ", ".join(sorted(known)) or "(none)"
    return ActuationError(f"{backend}: unknown pool {pool!r}; configured pools: {names}", ErrorClass.PERMANENT)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries of transient failures inside one actuator call (the loop owns longer backoff)."""

    attempts: int = 3
    base_s: float = 0.2
    max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be >= 1")


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, ActuationError) and exc.error_class is ErrorClass.TRANSIENT


def retrying(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    backend: str,
    op: str,
    pool: str = "",
    retry_on: Callable[[BaseException], bool] = _is_transient,
) -> T:
    """Call ``fn``; retry transient ActuationErrors with exponential backoff, then re-raise the last one.

    ``retry_on`` narrows what is retried (e.g. a conflict that needs a fresh read, not the same request again).
    """

    def _before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.info("actuator_retry", backend=backend, pool=pool, op=op, attempt=state.attempt_number, error=str(exc))

    retryer = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.base_s, max=policy.max_s),
        retry=tenacity.retry_if_exception(retry_on),
        before_sleep=_before_sleep,
        reraise=True,
    )
    return retryer(fn)


@dataclass(slots=True)
class CallLog:
    """Logs one ``actuator_call`` event per backend call with its result and duration."""

    backend: str
    dry_run: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    """Calls per ``op`` (for tests and the daemon's own metrics)."""

    @contextmanager
    def call(self, pool: str, op: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Time the block; log ``actuator_call`` with result ok/error class; extra fields may be added to the dict."""
        start = time.perf_counter()
        extra: dict[str, Any] = dict(fields)
        self.counts[op] = self.counts.get(op, 0) + 1
        try:
            yield extra
        except ActuationError as exc:
            self._emit(pool, op, exc.error_class.value, start, extra, error=str(exc))
            raise
        except Exception as exc:
            self._emit(pool, op, "error", start, extra, error=f"{type(exc).__name__}: {exc}")
            raise
        self._emit(pool, op, str(extra.pop("result", "ok")), start, extra)

    def _emit(self, pool: str, op: str, result: str, start: float, extra: Mapping[str, Any], **more: Any) -> None:
        duration_ms = round((time.perf_counter() - start) * 1000.0, 2)
        log.info(
            "actuator_call",
            backend=self.backend,
            pool=pool,
            op=op,
            result=result,
            duration_ms=duration_ms,
            dry_run=self.dry_run,
            **extra,
            **more,
        )

    def would(self, pool: str, op: str, **fields: Any) -> None:
        """Log what a dry-run actuator would have changed."""
        log.info("actuator_dry_run", backend=self.backend, pool=pool, op=op, **fields)


@dataclass(frozen=True, slots=True)
class ExternalChangeReport:
    """A target pdscale set was changed by someone else."""

    pool: str
    ours: int
    theirs: int
    by: str = ""


@dataclass(slots=True)
class ExternalChangeDetector:
    """Remembers the target this actuator last applied per pool and reports when the backend disagrees.

    The Reconciler decides whether to adopt or hold; the actuator only detects and logs (once per change).
    """

    backend: str
    applied: dict[str, int] = field(default_factory=dict)
    reported: dict[str, int] = field(default_factory=dict)

    def applied_now(self, pool: str, replicas: int) -> None:
        """Record a target this actuator just wrote."""
        self.applied[pool] = replicas
        self.reported.pop(pool, None)

    def observe(self, pool: str, actual: int, by: str = "") -> ExternalChangeReport | None:
        """Compare the backend's target with ours; a report (logged once) when it differs."""
        ours = self.applied.get(pool)
        if ours is None or ours == actual:
            return None
        report = ExternalChangeReport(pool=pool, ours=ours, theirs=actual, by=by)
        if self.reported.get(pool) != actual:
            self.reported[pool] = actual
            log.warning("actuator_external_change", backend=self.backend, pool=pool, ours=ours, theirs=actual, by=by)
        return report


class ActuatorParams(BaseModel):
    """Parameters every actuator accepts (``actuator.params``); subclasses add their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dry_run: bool = False
    """Read real state, log what would change, change nothing."""
    retry_attempts: int = Field(3, ge=1, le=10)
    retry_base_s: float = Field(0.2, ge=0)
    retry_max_s: float = Field(2.0, ge=0)
    timeout_s: float = Field(10.0, gt=0)

    def retry_policy(self) -> RetryPolicy:
        """The in-call retry policy these params describe."""
        return RetryPolicy(attempts=self.retry_attempts, base_s=self.retry_base_s, max_s=self.retry_max_s)


def _format(where: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        path = f"{where}.{loc}" if loc else where
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)


def parse_params(model: type[M], params: Mapping[str, Any], backend: str) -> M:
    """Validate ``actuator.params``; a permanent ActuationError names each bad field."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise ActuationError(f"{backend}: {_format('actuator.params', exc)}", ErrorClass.PERMANENT) from None


def parse_pool_addresses(model: type[M], pools: Mapping[str, Any], backend: str) -> dict[str, M]:
    """Validate every pool's ``actuator`` mapping; errors name ``pools[<name>].actuator.<field>``."""
    out: dict[str, M] = {}
    for name, spec in pools.items():
        raw = getattr(spec, "actuator", None)
        if raw is None and isinstance(spec, Mapping):
            raw = spec
        try:
            out[name] = model.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise ActuationError(
                f"{backend}: {_format(f'pools[{name}].actuator', exc)}", ErrorClass.PERMANENT
            ) from None
    return out
