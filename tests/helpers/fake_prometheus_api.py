"""A tiny stand-in for Prometheus' HTTP API: ``/api/v1/query`` answers canned instant-query results.

Answers are chosen per query: an exact query text set with ``set`` wins, then the longest fragment that the
query contains; unmatched queries return an empty vector. ``timestamp(`` queries (freshness) default to the
evaluation time minus ``sample_age_s``. ``fail_next`` answers the next requests with an HTTP error and
``delay_s`` makes every answer slow (timeouts); ``queries`` records what was asked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

__all__ = ["EMPTY", "FakePrometheusAPI", "fake_prometheus_api"]

EMPTY: list[float] = []
"""A value that answers with no series."""


class FakePrometheusAPI:
    """Canned answers for PromQL instant queries over real HTTP."""

    def __init__(self) -> None:
        self.rules: dict[str, Any] = {}
        self.sample_age_s = 0.0
        self.delay_s = 0.0
        self.queries: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-prometheus", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def set(self, query_or_fragment: str, value: Any) -> None:
        """Answer queries equal to (or containing) this text with ``value``.

        ``value``: a number or "NaN"/"+Inf" (one series), a list of numbers (that many series), ``EMPTY``,
        or ``("scalar", v)`` for a scalar result.
        """
        self.rules[query_or_fragment] = value

    def fail_next(self, times: int = 1, status: int = 503) -> None:
        """Answer the next ``times`` requests with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    def reset_queries(self) -> None:
        """Forget the recorded queries."""
        self.queries.clear()

    def answer(self, query: str) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for ``query``."""
        now = time.time()
        with self._lock:
            if self._failures:
                status = self._failures.pop(0)
                return status, {"status": "error", "errorType": "unavailable", "error": f"injected {status}"}
        value: Any
        if query in self.rules:
            value = self.rules[query]
        else:
            matches = [frag for frag in self.rules if frag in query]
            if matches:
                value = self.rules[max(matches, key=len)]
            elif "timestamp(" in query:
                value = now - self.sample_age_s
            else:
                value = EMPTY
        if isinstance(value, tuple) and value[0] == "scalar":
            return 200, {"status": "success", "data": {"resultType": "scalar", "result": [now, str(value[1])]}}
        values = value if isinstance(value, list) else [value]
        result = [{"metric": {"series": str(i)}, "value": [now, str(v)]} for i, v in enumerate(values)]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                query = parse_qs(url.query).get("query", [""])[0]
                api.queries.append(query)
                api.headers.append(dict(self.headers))
                if api.delay_s:
                    time.sleep(api.delay_s)
                status, body = api.answer(query)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        return Handler

    def start(self) -> FakePrometheusAPI:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def fake_prometheus_api() -> Iterator[FakePrometheusAPI]:
    """A started FakePrometheusAPI, stopped on exit."""
    api = FakePrometheusAPI().start()
    try:
        yield api
    finally:
        api.stop()
