# ruff: noqa: PLC0415 - requests is imported lazily, like every actuator's client
"""Counting a Ray Serve scale-down's drain: which replicas Ray stopped, and what was still running at the timeout.

Ray Serve chooses the replicas to stop, stops routing to them (``STOPPING``) and force-kills one that still has
requests after ``graceful_shutdown_timeout_s``. pdscale cannot prevent that cut, but it can count it: after the
scale-down's PUT it follows the deployment's replicas until those Ray stops are gone, reading each stopping
replica's in-flight requests from Ray's metrics (``ray_serve_replica_processing_queries``, one sample per
replica, served by each node's metrics agent at ``params.metrics_url``). A replica that stayed ``STOPPING`` until
the timeout with requests in flight was cut: it is reported as ``drain_timeout; N in-flight requests cut`` (the
last count read; Ray reports its metrics every ``metrics_report_interval_ms``, so N is the count at most that long
before the kill); one that left earlier drained. Without ``metrics_url`` nothing is counted (as before).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from string import Template
from typing import TYPE_CHECKING, Any

import structlog

from pdscale.actuators.drain import result
from pdscale.controller.core.protocols import DrainResult

if TYPE_CHECKING:
    from pdscale.actuators.ray_serve import RayServeActuator, RayServePoolAddress

__all__ = ["INFLIGHT_METRIC", "replica_inflight", "watch_scale_down"]

log = structlog.get_logger(__name__)

INFLIGHT_METRIC = "ray_serve_replica_processing_queries"
"""Ray Serve's gauge of the requests a replica is processing (labels: deployment, replica, application)."""

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\}\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def replica_inflight(metrics_text: str, replica: str, metric: str = INFLIGHT_METRIC) -> float:
    """The ``metric`` samples labelled ``replica=<replica>`` summed (``nan`` when there is none)."""
    total, seen = 0.0, False
    for line in metrics_text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != metric:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        if labels.get("replica") != replica:
            continue
        try:
            total += float(m.group(3))
        except ValueError:
            continue
        seen = True
    return total if seen else math.nan


def _read(act: RayServeActuator, replica: Mapping[str, Any]) -> float:
    import requests

    template = act.params.metrics_url
    if template is None:
        return math.nan
    url = Template(template).safe_substitute(node_ip=str(replica.get("node_ip") or "127.0.0.1"))
    try:
        resp = act._session.get(url, timeout=act.params.timeout_s)
    except requests.RequestException:
        return math.nan
    if resp.status_code >= 400:
        return math.nan
    return replica_inflight(resp.text, _rid(replica))


def _rid(r: Mapping[str, Any]) -> str:
    return str(r.get("replica_id") or r.get("actor_name") or r.get("actor_id"))


def watch_scale_down(
    act: RayServeActuator,
    pool: str,
    addr: RayServePoolAddress,
    grace_s: float,
    ready_before: set[str],
    target: int,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainResult:
    """Follow the replicas Ray stops after a scale-down PUT until they are gone (at most the graceful shutdown
    timeout plus ``stop_wait_margin_s``) and account for them: drained, cut at the timeout, or cancelled."""
    poll_s = act.params.stop_poll_s
    deadline = clock() + grace_s + act.params.stop_wait_margin_s
    first_seen: dict[str, float] = {}
    lasted: dict[str, float] = {}
    last: dict[str, float] = {}
    while True:
        _, app, _ = act._status(pool)
        dep = (app.get("deployments") or {}).get(addr.deployment) or {}
        replicas = [r for r in dep.get("replicas") or [] if str(r.get("state", "")).upper() != "STOPPED"]
        now = clock()
        stopping = [r for r in replicas if str(r.get("state", "")).upper() == "STOPPING"]
        for r in stopping:
            rid = _rid(r)
            first_seen.setdefault(rid, now)
            n = _read(act, r)
            if not math.isnan(n):
                last[rid] = n
        present = {_rid(r) for r in replicas}
        for rid, t0 in first_seen.items():
            if rid not in present and rid not in lasted:
                lasted[rid] = now - t0
        gone_before_seen = {rid for rid in ready_before if rid not in present and rid not in first_seen}
        for rid in gone_before_seen:  # stopped and removed between two polls
            first_seen[rid], lasted[rid] = now, 0.0
        if (first_seen and not stopping) or now >= deadline:
            break
        if not first_seen and not stopping and len(replicas) <= target:
            break  # Ray let go of starting replicas only: nothing ran on them
        sleep(poll_s)
    drained: list[str] = []
    timed_out: list[str] = []
    cancelled = 0
    for rid in sorted(first_seen):
        held = last.get(rid, 0.0)
        # Still stopping at our deadline (Ray kills it with what it holds), or it lasted to the timeout holding work.
        if rid not in lasted or (lasted[rid] >= grace_s - poll_s and held > 0):
            timed_out.append(rid)
        elif rid in ready_before:
            drained.append(rid)
        else:
            cancelled += 1
    cut = int(sum(last.get(rid, 0.0) for rid in timed_out))
    for rid in timed_out:
        log.warning(
            "drain_timeout",
            backend="ray_serve",
            pool=pool,
            replica=rid,
            timeout_s=grace_s,
            inflight_cut=int(last.get(rid, 0.0)),
        )
    if drained:
        log.info("drain_done", backend="ray_serve", pool=pool, replicas=drained)
    return result(pool, cancelled, drained, timed_out, cut)
