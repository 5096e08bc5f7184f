"""Prometheus exporter of a simulated cluster with vLLM's metric names, one series set per pool.

The text format (0.0.4) is written by hand: prometheus_client >= 0.23 rewrites names that contain a
colon such as `vllm:num_requests_running` in its exposition, and vLLM dashboards and pdscale's
Prometheus source query those names verbatim.

    exporter = SimExporter(cluster.pool_metrics, pools=[Pool.PREFILL, Pool.DECODE], model_name="llama-3.1-70b")
    exporter.start()           # 127.0.0.1, a free port
    requests.get(exporter.url) # scrape
    exporter.stop()
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog

from pdscale.simulator.config import Pool
from pdscale.simulator.histogram import HistogramSnapshot
from pdscale.simulator.metrics import PoolMetrics

__all__ = ["CONTENT_TYPE", "SimExporter", "render_metrics"]

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = (
    ("vllm:prompt_tokens_total", "prompt_tokens_total", "Number of prefill tokens processed."),
    ("vllm:generation_tokens_total", "generation_tokens_total", "Number of generation tokens processed."),
    ("vllm:request_success_total", "requests_finished_total", "Count of successfully processed requests."),
    ("pdscale_sim_requests_arrived_total", "requests_arrived_total", "Requests that reached the pool."),
    ("pdscale_sim_prompt_tokens_arrived_total", "prompt_tokens_arrived_total", "Prompt tokens that reached the pool."),
    ("pdscale_sim_requests_dropped_total", "requests_dropped_total", "Requests the pool dropped."),
    ("pdscale_sim_busy_seconds_total", "busy_s_total", "Replica-seconds spent computing."),
    ("pdscale_sim_serving_seconds_total", "serving_s_total", "Replica-seconds spent ready or draining."),
    ("pdscale_sim_gpu_seconds_total", "gpu_s_total", "GPU-seconds paid (starting, ready, draining)."),
)
_GAUGES = (
    ("vllm:num_requests_running", "num_requests_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
    ("pdscale_sim_ready_replicas", "ready_replicas", "Ready replicas of the pool."),
    ("pdscale_sim_starting_replicas", "starting_replicas", "Starting replicas of the pool."),
    ("pdscale_sim_draining_replicas", "draining_replicas", "Draining replicas of the pool."),
)
_HISTOGRAMS = (
    ("vllm:time_to_first_token_seconds", "ttft_seconds", "Histogram of time to first token in seconds."),
    ("vllm:inter_token_latency_seconds", "itl_seconds", "Histogram of inter-token latency in seconds."),
    ("vllm:request_prompt_tokens", "request_prompt_tokens", "Number of prefill tokens processed."),
    ("vllm:request_generation_tokens", "request_generation_tokens", "Number of generation tokens processed."),
    ("vllm:iteration_tokens_total", "iteration_tokens", "Histogram of number of tokens per engine_step."),
    (
        "vllm:request_prefill_time_seconds",
        "request_prefill_time_seconds",
        "Histogram of time spent in PREFILL phase for request.",
    ),
)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value)) + ".0"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def render_metrics(metrics: Sequence[PoolMetrics], model_name: str) -> str:
    """Prometheus text format 0.0.4 for the given pools' metrics."""
    lines: list[str] = []

    def base(m: PoolMetrics) -> list[tuple[str, str]]:
        return [("model_name", model_name), ("pool", m.pool.value), ("role", m.pool.value)]

    for name, attr, help_text in _COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        lines += [f"{name}{_labels(base(m))} {_fmt(float(getattr(m, attr)))}" for m in metrics]
    for name, attr, help_text in _GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{_labels(base(m))} {_fmt(float(getattr(m, attr)))}" for m in metrics]
    for name, attr, help_text in _HISTOGRAMS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for m in metrics:
            h: HistogramSnapshot = getattr(m, attr)
            labels = base(m)
            for bound, count in zip((*h.bounds, math.inf), h.cumulative_counts, strict=True):
                lines.append(f"{name}_bucket{_labels([*labels, ('le', _fmt(bound))])} {_fmt(count)}")
            lines.append(f"{name}_sum{_labels(labels)} {_fmt(h.sum)}")
            lines.append(f"{name}_count{_labels(labels)} {_fmt(h.count)}")
    return "\n".join(lines) + "\n"


class SimExporter:
    """Serves `render_metrics` of live pool metrics over HTTP on 127.0.0.1 from a daemon thread.

    `metrics_of` is called on every scrape (under `lock`, when given, so the simulation can hold it while it
    advances).
    """

    def __init__(
        self,
        metrics_of: Callable[[Pool], PoolMetrics],
        pools: Sequence[Pool],
        model_name: str,
        *,
        port: int = 0,
        lock: threading.Lock | None = None,
    ) -> None:
        self._metrics_of = metrics_of
        self._pools = tuple(pools)
        self._model_name = model_name
        self._port = port
        self._lock = lock or threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def render(self) -> str:
        """The current exposition text."""
        with self._lock:
            metrics = [self._metrics_of(p) for p in self._pools]
        return render_metrics(metrics, self._model_name)

    @property
    def port(self) -> int:
        """Bound port (after start)."""
        if self._server is None:
            raise RuntimeError("SimExporter is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Scrape URL (after start)."""
        return f"http://127.0.0.1:{self.port}/metrics"

    def start(self) -> None:
        """Bind 127.0.0.1 (a free port unless one was given) and serve in a daemon thread."""
        if self._server is not None:
            return
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sim-exporter", daemon=True)
        self._thread.start()
        log.info("sim_exporter_started", url=self.url)

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._server = None
        self._thread = None
        log.info("sim_exporter_stopped")
