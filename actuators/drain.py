# ruff: noqa: PLC0415 - requests is imported lazily, like every actuator's client
"""Draining replicas through their engine before an actuator removes them, bounded by ``drain_timeout_s``.

Every actuator that removes chosen replicas (Kubernetes, AWS Auto Scaling) shares this: for each victim,
optionally ask the engine to stop accepting work (``stop_path``), then poll its in-flight count until it is zero
or the pool's ``drain_timeout_s`` has passed. The in-flight count is read from the engine's Prometheus text
(``/metrics``): the sum of ``vllm:num_requests_running`` + ``vllm:num_requests_waiting`` (vLLM) or
``sglang:num_running_reqs`` + ``sglang:num_queue_reqs`` (SGLang) over all label sets, or the metric names
configured. Stopping the *routing* of new requests is the actuator's part (a pod label, the router), done
before this waits.

A pool's ``actuator.drain`` block (:class:`EngineDrain`) says where each replica's engine answers; without it,
the actuator still chooses its victims and cancels starting replicas first, but does not wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from string import Template

import structlog
from pydantic import BaseModel, ConfigDict, Field

from pdscale.controller.core.protocols import DrainResult

__all__ = ["DEFAULT_INFLIGHT_METRICS", "Drainer", "EngineDrain", "EngineTarget", "inflight_from_metrics"]

log = structlog.get_logger(__name__)

DEFAULT_INFLIGHT_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "sglang:num_running_reqs",
    "sglang:num_queue_reqs",
)


class EngineDrain(BaseModel):
    """``pools[].actuator.drain``: how to reach one replica's engine while draining it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "http://$address:8000"
    """Engine base URL; ``$address`` (pod IP / instance private IP), ``$replica`` and ``$pool`` are substituted."""
    metrics_path: str = "/metrics"
    inflight_metrics: tuple[str, ...] = DEFAULT_INFLIGHT_METRICS
    """Prometheus metrics whose samples add up to the engine's in-flight requests."""
    stop_path: str | None = None
    """POSTed once before waiting, for engines that can refuse new work themselves (e.g. a ``/drain`` route)."""
    poll_s: float = Field(1.0, gt=0)
    timeout_s: float | None = Field(None, ge=0)
    """Overrides the pool's ``drain_timeout_s``."""
    request_timeout_s: float = Field(2.0, gt=0)


@dataclass(frozen=True, slots=True)
class EngineTarget:
    """One replica to drain: its id and its engine's base URL."""

    replica: str
    url: str


def inflight_from_metrics(text: str, names: Sequence[str]) -> float:
    """Sum of the samples of ``names`` in Prometheus text exposition (``nan`` when none is present)."""
    wanted = set(names)
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in wanted:
            continue
        try:
            rest = line.rsplit("}", 1)[1] if "}" in line else line.split(None, 1)[1]
            total += float(rest.split()[0])
            seen = True
        except (ValueError, IndexError):
            continue
    return total if seen else math.nan


@dataclass(slots=True)
class Drainer:
    """Drains engines over HTTP; ``sleep`` and ``clock`` are injectable for tests."""

    backend: str
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _session: object | None = field(default=None, repr=False)

    def url_for(self, cfg: EngineDrain, pool: str, replica: str, address: str) -> str:
        """The engine base URL of ``replica`` from the template."""
        values = {"address": address, "replica": replica, "pool": pool}
        return Template(cfg.url).safe_substitute(values).rstrip("/")

    def _http(self) -> object:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def inflight(self, cfg: EngineDrain, url: str) -> float:
        """The engine's in-flight requests now (``nan`` when it cannot be read)."""
        import requests

        try:
            resp = self._http().get(url + cfg.metrics_path, timeout=cfg.request_timeout_s)  # type: ignore[attr-defined]
        except requests.RequestException:
            return math.nan
        if resp.status_code >= 400:
            return math.nan
        return inflight_from_metrics(str(resp.text), cfg.inflight_metrics)

    def _stop(self, cfg: EngineDrain, pool: str, target: EngineTarget) -> None:
        import requests

        if cfg.stop_path is None:
            return
        try:
            resp = self._http().post(target.url + cfg.stop_path, timeout=cfg.request_timeout_s)  # type: ignore[attr-defined]
            ok = resp.status_code < 400
        except requests.RequestException:
            ok = False
        if not ok:
            log.warning("drain_stop_failed", backend=self.backend, pool=pool, replica=target.replica, url=target.url)

    def drain(
        self, cfg: EngineDrain, pool: str, targets: Sequence[EngineTarget], timeout_s: float
    ) -> tuple[list[str], list[str], int]:
        """Stop and wait for each target: (drained ids, timed-out ids, in-flight requests left on the latter).

        An engine whose count cannot be read keeps being polled; at the timeout it counts as timed out with the
        last count read (0 when none was ever read).
        """
        limit = cfg.timeout_s if cfg.timeout_s is not None else timeout_s
        for t in targets:
            self._stop(cfg, pool, t)
        deadline = self.clock() + limit
        waiting = {t.replica: t for t in targets}
        last: dict[str, float] = {}
        drained: list[str] = []
        while waiting:
            for rid, t in list(waiting.items()):
                n = self.inflight(cfg, t.url)
                if not math.isnan(n):
                    last[rid] = n
                    if n <= 0:
                        drained.append(rid)
                        del waiting[rid]
            if not waiting or self.clock() >= deadline:
                break
            self.sleep(min(cfg.poll_s, max(0.0, deadline - self.clock())))
        timed_out = sorted(waiting)
        cut = int(sum(last.get(rid, 0.0) for rid in timed_out))
        for rid in timed_out:
            log.warning(
                "drain_timeout",
                backend=self.backend,
                pool=pool,
                replica=rid,
                timeout_s=limit,
                inflight_cut=int(last.get(rid, 0.0)),
            )
        if drained:
            log.info("drain_done", backend=self.backend, pool=pool, replicas=drained)
        return drained, timed_out, cut


def result(
    pool: str, cancelled: int, drained: Sequence[str], timed_out: Sequence[str], cut: int, deferred: int = 0
) -> DrainResult:
    """A DrainResult from the parts each actuator gathers."""
    return DrainResult(
        pool=pool,
        cancelled=cancelled,
        drained=tuple(drained),
        timed_out=tuple(timed_out),
        cut_inflight=cut,
        deferred=deferred,
    )


def pool_drain_timeout_s(spec: object, default: float = 600.0) -> float:
    """A pool's ``drain_timeout_s`` from its settings or spec (a mapping or an object)."""
    if isinstance(spec, Mapping):
        return float(spec.get("drain_timeout_s", default))
    return float(getattr(spec, "drain_timeout_s", default))
