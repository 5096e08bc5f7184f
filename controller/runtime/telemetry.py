"""The daemon's own telemetry: pdscale_* metrics (names as in deploy/metrics-catalog.yaml), /healthz, /readyz.

``Telemetry.observe(result, reconciler)`` updates every gauge/counter from one tick; ``TelemetryServer`` serves
``/metrics`` (Prometheus text), ``/healthz`` (the process answers) and ``/readyz`` (a tick has completed) from a
small HTTP server with a bounded pool of worker threads, so a slow scrape never delays the loop.
"""

from __future__ import annotations

import math
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pdscale.controller.core.decide import ALL_POOLS
from pdscale.controller.core.types import ROLE_SIGNALS, SLO, DataState, PoolObservation, PoolRole, ReplicaState
from pdscale.controller.runtime.loop import Reconciler, TickResult
from pdscale.controller.runtime.record import Outcome

__all__ = ["METRIC_NAMES", "SloTracker", "Telemetry", "TelemetryServer"]

log = structlog.get_logger(__name__)

_QUANTILES = (0.5, 0.9, 0.99)
_TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

METRIC_NAMES: tuple[str, ...] = (
    "pdscale_up",
    "pdscale_leader",
    "pdscale_desired_replicas",
    "pdscale_actual_replicas",
    "pdscale_forecast",
    "pdscale_observed_demand",
    "pdscale_predicted_ttft_seconds",
    "pdscale_observed_ttft_seconds",
    "pdscale_predicted_itl_seconds",
    "pdscale_observed_itl_seconds",
    "pdscale_slo_ttft_seconds",
    "pdscale_slo_itl_seconds",
    "pdscale_utilization_ratio",
    "pdscale_kv_usage_ratio",
    "pdscale_decisions_total",
    "pdscale_actuation_failures_total",
    "pdscale_metrics_staleness_seconds",
    "pdscale_metrics_missing",
    "pdscale_gpu_budget",
    "pdscale_gpus_allocated",
    "pdscale_paused",
    "pdscale_slo_attainment_ratio",
    "pdscale_guard_fired_total",
    "pdscale_tick_duration_seconds",
)


class SloTracker:
    """Fraction of recent requests within the SLO, estimated per tick from the observed tail latency.

    A tick whose observed p99 (TTFT for prefill, ITL for decode, both for colocated) met the objective counts
    its requests (request rate x tick, at least 1) as met; the ratio is over the last ``window`` ticks with data.
    """

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._ticks: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, role: PoolRole, obs: PoolObservation, slo: SLO, tick_s: float) -> None:
        """Add one tick's observation."""
        if obs.state is not DataState.OK:
            return
        s = obs.signals
        checks: list[bool] = []
        if role in (PoolRole.PREFILL, PoolRole.COLOCATED) and s.ttft_p99_ms is not None:
            checks.append(s.ttft_p99_ms <= slo.ttft_ms)
        if role in (PoolRole.DECODE, PoolRole.COLOCATED) and s.itl_p99_ms is not None:
            checks.append(s.itl_p99_ms <= slo.itl_ms)
        if not checks:
            return
        weight = max(1.0, (s.request_rate_per_s or 0.0) * tick_s)
        q = self._ticks.setdefault(obs.pool, deque(maxlen=self.window))
        q.append((weight, weight if all(checks) else 0.0))

    def ratio(self, pool: str) -> float | None:
        """Met / total over the window, or None with no data yet."""
        q = self._ticks.get(pool)
        if not q:
            return None
        total = sum(w for w, _ in q)
        return sum(m for _, m in q) / total if total > 0 else None


class Telemetry:
    """The pdscale_* metrics in their own registry (never the process-global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ready = False
        self.ticks = 0
        self.slo_tracker = SloTracker()
        self.up = Gauge("pdscale_up", "1 while the control loop is running.", registry=r)
        self.leader = Gauge(
            "pdscale_leader",
            "1 while this daemon actuates (the elected leader, or leader election off); 0 as a standby.",
            registry=r,
        )
        self.desired = Gauge(
            "pdscale_desired_replicas",
            "Replica count pdscale wants for the pool after guards.",
            ["pool", "role"],
            registry=r,
        )
        self.actual = Gauge(
            "pdscale_actual_replicas",
            "Replicas the actuator reports, by lifecycle state.",
            ["pool", "role", "state"],
            registry=r,
        )
        self.forecast = Gauge(
            "pdscale_forecast",
            "Forecast demand over the pool's look-ahead horizon.",
            ["pool", "signal", "quantile"],
            registry=r,
        )
        self.observed = Gauge(
            "pdscale_observed_demand", "Demand observed at the last tick.", ["pool", "signal"], registry=r
        )
        self.pred_ttft = Gauge(
            "pdscale_predicted_ttft_seconds",
            "Capacity model's predicted tail TTFT at the desired replica count.",
            ["pool"],
            registry=r,
        )
        self.obs_ttft = Gauge(
            "pdscale_observed_ttft_seconds",
            "Observed TTFT quantiles at the last tick.",
            ["pool", "quantile"],
            registry=r,
        )
        self.pred_itl = Gauge(
            "pdscale_predicted_itl_seconds",
            "Capacity model's predicted tail ITL at the desired replica count.",
            ["pool"],
            registry=r,
        )
        self.obs_itl = Gauge(
            "pdscale_observed_itl_seconds", "Observed ITL quantiles at the last tick.", ["pool", "quantile"], registry=r
        )
        self.slo_ttft = Gauge("pdscale_slo_ttft_seconds", "Configured TTFT objective.", registry=r)
        self.slo_itl = Gauge("pdscale_slo_itl_seconds", "Configured ITL objective.", registry=r)
        self.util = Gauge(
            "pdscale_utilization_ratio",
            "Compute-busy share of the pool for a phase (busy time over serving time); the KV share is separate.",
            ["pool", "phase"],
            registry=r,
        )
        self.kv_usage = Gauge(
            "pdscale_kv_usage_ratio",
            "KV-cache occupancy of the pool (replicas' average), not its busy share.",
            ["pool"],
            registry=r,
        )
        self.decisions = Counter(
            "pdscale_decisions", "Scaling decisions by direction.", ["pool", "direction"], registry=r
        )
        self.failures = Counter(
            "pdscale_actuation_failures", "Failed actuator calls by error class.", ["pool", "error_class"], registry=r
        )
        self.staleness = Gauge(
            "pdscale_metrics_staleness_seconds",
            "Age of the newest metrics sample used for the pool.",
            ["pool"],
            registry=r,
        )
        self.missing = Gauge(
            "pdscale_metrics_missing",
            "1 when the pool's metrics are missing, empty or NaN (allocation held).",
            ["pool"],
            registry=r,
        )
        self.budget = Gauge("pdscale_gpu_budget", "Configured GPU budget shared by all pools.", registry=r)
        self.allocated = Gauge(
            "pdscale_gpus_allocated", "GPUs held by all pools, starting and draining replicas included.", registry=r
        )
        self.paused = Gauge(
            "pdscale_paused", "1 while an operator has paused scaling of the pool.", ["pool"], registry=r
        )
        self.attainment = Gauge(
            "pdscale_slo_attainment_ratio", "Fraction of recent requests that met the pool's SLO.", ["pool"], registry=r
        )
        self.guards = Counter(
            "pdscale_guard_fired", "Times a guard changed or held a policy decision.", ["pool", "guard"], registry=r
        )
        self.tick = Histogram(
            "pdscale_tick_duration_seconds", "Wall time of one control-loop tick.", buckets=_TICK_BUCKETS, registry=r
        )

    def observe(self, result: TickResult, rec: Reconciler) -> None:
        """Update every metric from one tick."""
        self.ticks += 1
        self.up.set(1)
        self.tick.observe(result.duration_s)
        self.slo_ttft.set(rec.slo.ttft_ms / 1000.0)
        self.slo_itl.set(rec.slo.itl_ms / 1000.0)
        self.budget.set(math.nan if rec.budget_gpus is None else rec.budget_gpus)
        flipped = {f.from_pool for f in result.decision.flips} | {f.to_pool for f in result.decision.flips}
        allocated = 0
        for name, spec in rec.pools.items():
            role = spec.role.value
            st = result.states[name]
            allocated += st.paid * spec.gpus_per_replica
            for state, n in ((ReplicaState.READY, st.ready), (ReplicaState.STARTING, st.starting)):
                self.actual.labels(name, role, state.value).set(n)
            self.actual.labels(name, role, ReplicaState.DRAINING.value).set(st.draining)
            d = result.decision.pools.get(name)
            if d is not None:
                self.desired.labels(name, role).set(d.target)
                self.decisions.labels(name, "flip" if name in flipped else d.direction.value).inc()
                for g in d.guards:
                    self.guards.labels(name, g).inc()
                for key, gauge in (("predicted_ttft_ms", self.pred_ttft), ("predicted_itl_ms", self.pred_itl)):
                    v = d.estimate.get(key)
                    if v is not None and math.isfinite(v):
                        gauge.labels(name).set(v / 1000.0)
            out = result.outcomes.get(name)
            if out is not None and out.outcome is Outcome.FAILED:
                self.failures.labels(name, out.error_class or "transient").inc()
            self._observation(name, spec.role, result, rec)
            self.paused.labels(name).set(1 if (name in rec.paused or ALL_POOLS in rec.paused) else 0)
        self.allocated.set(allocated)
        self.ready = True

    def _observation(self, name: str, role: PoolRole, result: TickResult, rec: Reconciler) -> None:
        obs = result.observations[name]
        ok = obs.state is DataState.OK
        self.missing.labels(name).set(0 if ok else 1)
        age = obs.staleness_s(result.now_s)
        self.staleness.labels(name).set(math.nan if age is None else age)
        for sig in ROLE_SIGNALS[role]:
            v = obs.signals.demand(sig) if ok else None
            self.observed.labels(name, sig.value).set(math.nan if v is None else v)
            fc = result.forecasts.get(name, {}).get(sig)
            if fc is not None:
                self.forecast.labels(name, sig.value, "mean").set(fc.mean)
                for q in _QUANTILES:
                    self.forecast.labels(name, sig.value, str(q)).set(fc.quantile(q))
        s = obs.signals
        for label, ttft, itl in (("0.5", s.ttft_p50_ms, s.itl_p50_ms), ("0.99", s.ttft_p99_ms, s.itl_p99_ms)):
            self.obs_ttft.labels(name, label).set(math.nan if (ttft is None or not ok) else ttft / 1000.0)
            self.obs_itl.labels(name, label).set(math.nan if (itl is None or not ok) else itl / 1000.0)
        for phase, v in (("prefill", s.prefill_utilization), ("decode", s.decode_utilization)):
            if v is not None and ok:
                self.util.labels(name, phase).set(v)
        if s.kv_usage_ratio is not None and ok:
            self.kv_usage.labels(name).set(s.kv_usage_ratio)
        self.slo_tracker.observe(role, obs, rec.slo, rec.tick_s)
        ratio = self.slo_tracker.ratio(name)
        if ratio is not None:
            self.attainment.labels(name).set(ratio)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    telemetry: Telemetry
    is_ready: Callable[[], bool]
    timeout = 5.0
    """Seconds a socket read or write may stall before the connection is dropped (frees the worker)."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.telemetry.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            ready = self.is_ready()
            self._send(200 if ready else 503, b"ready\n" if ready else b"not ready: no tick completed yet\n")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged."""


class _BoundedHTTPServer(HTTPServer):
    """An HTTP server whose idle connections cost a file descriptor, not a thread.

    One thread accepts connections and waits, in a selector, until each sends something; only then does one of
    ``workers`` threads read and answer it, with a ``request_timeout_s`` socket timeout. A connection silent for
    ``idle_timeout_s`` is closed, and at most ``max_waiting`` wait at once (the oldest is closed first).
    """

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        workers: int = 4,
        idle_timeout_s: float = 10.0,
        max_waiting: int = 512,
    ) -> None:
        super().__init__(address, handler)
        self.idle_timeout_s = idle_timeout_s
        self.max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pdscale-telemetry-worker")
        self._waiting: dict[socket.socket, tuple[float, Any]] = {}
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()

    def serve(self) -> None:
        """Accept and dispatch until ``stop`` is called."""
        with selectors.DefaultSelector() as sel:
            self.socket.setblocking(False)
            sel.register(self.socket, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=self._next_deadline_s()):
                    if key.fileobj is self.socket:
                        self._accept(sel)
                    elif key.fileobj is not self._wake_r:
                        conn = key.fileobj
                        if not isinstance(conn, socket.socket) or conn not in self._waiting:
                            continue  # closed earlier in this round (the oldest, to make room)
                        sel.unregister(conn)
                        _, addr = self._waiting.pop(conn)
                        self._pool.submit(self._answer, conn, addr)
                self._expire(sel)
            for conn in list(self._waiting):
                self._drop(sel, conn)

    def _next_deadline_s(self) -> float:
        if not self._waiting:
            return 1.0
        return max(0.0, min(d for d, _ in self._waiting.values()) - time.monotonic())

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            conn, addr = self.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # out of file descriptors, say: keep serving the connections already open
            log.warning("telemetry_accept_failed", error=str(exc))
            return
        if len(self._waiting) >= self.max_waiting:
            self._drop(sel, min(self._waiting, key=lambda c: self._waiting[c][0]))
        conn.setblocking(False)
        self._waiting[conn] = (time.monotonic() + self.idle_timeout_s, addr)
        sel.register(conn, selectors.EVENT_READ)

    def _expire(self, sel: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn in [c for c, (d, _) in self._waiting.items() if d <= now]:
            self._drop(sel, conn)

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        sel.unregister(conn)
        self._waiting.pop(conn, None)
        self.shutdown_request(conn)

    def _answer(self, conn: socket.socket, addr: Any) -> None:
        try:
            conn.setblocking(True)
            self.finish_request(conn, addr)  # the handler sets its own socket timeout
        except Exception:  # a broken or timed-out client must not end the worker
            self.handle_error(conn, addr)
        finally:
            self.shutdown_request(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One debug line instead of socketserver's traceback on stderr."""
        log.debug("telemetry_request_failed", client=str(client_address))

    def stop(self) -> None:
        """End ``serve``, wait for running answers, release the port."""
        self._stop.set()
        self._wake_w.send(b"x")

    def close(self) -> None:
        """Release the workers, the wake-up pair and the port (after ``stop``)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()
        self.server_close()


class TelemetryServer:
    """Serves /metrics, /healthz and /readyz on ``host:port`` (port 0 picks a free one) from a daemon thread.

    Idle connections hold no thread (see ``_BoundedHTTPServer``): a scraper or a load balancer that opens
    connections and never sends cannot exhaust the process.
    """

    def __init__(self, telemetry: Telemetry, listen: str, is_ready: Callable[[], bool] | None = None) -> None:
        host, _, port = listen.rpartition(":")
        handler = type(
            "TelemetryHandler",
            (_Handler,),
            {"telemetry": telemetry, "is_ready": staticmethod(is_ready or (lambda: telemetry.ready))},
        )
        try:
            self.httpd = _BoundedHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), handler)
        except (OSError, ValueError, OverflowError) as exc:
            raise ValueError(f"telemetry.listen: cannot bind {listen!r}: {exc}") from None
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve, name="pdscale-telemetry", daemon=True)

    def start(self) -> TelemetryServer:
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.httpd.stop()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.httpd.close()
