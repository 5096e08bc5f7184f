"""PrometheusMetricsSource against a fake Prometheus HTTP API: presets, bad data, zero traffic, staleness."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from pdscale.controller.core.types import DataState, PoolRole
from pdscale.controller.runtime.plugins import PluginError, PluginGroup, Registry
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.controller.sources.prometheus import PrometheusConfigError, PrometheusMetricsSource
from tests.helpers.fake_prometheus_api import EMPTY, FakePrometheusAPI, fake_prometheus_api

HEALTHY: Mapping[str, Any] = {
    "prompt_tokens_per_s": 5000.0,
    "generation_tokens_per_s": 300.0,
    "request_rate_per_s": 4.0,
    "isl_mean_tokens": 1250.0,
    "isl_p90_tokens": 2500.0,
    "osl_mean_tokens": 200.0,
    "osl_p90_tokens": 400.0,
    "running_requests": 12.0,
    "waiting_requests": 3.0,
    "kv_usage_ratio": 0.4,
    "ttft_mean_ms": 0.25,
    "ttft_p50_ms": 0.2,
    "ttft_p99_ms": 0.9,
    "itl_mean_ms": 0.025,
    "itl_p50_ms": 0.02,
    "itl_p99_ms": 0.045,
    "ready_replicas": 2.0,
}


def pools(*roles: PoolRole, selector: Mapping[str, Any] | None = None) -> dict[str, PoolSettings]:
    return {
        r.value: PoolSettings(
            name=r.value, role=r, gpus_per_replica=1, max_replicas=8, selector=dict(selector or {"role": r.value})
        )
        for r in roles
    }


def make(api: FakePrometheusAPI, *roles: PoolRole, **params: Any) -> PrometheusMetricsSource:
    params.setdefault("url", api.url)
    params.setdefault("retry_wait_s", 0.0)
    return PrometheusMetricsSource(pools(*(roles or (PoolRole.PREFILL,))), params)


def feed(api: FakePrometheusAPI, src: PrometheusMetricsSource, pool: str = "prefill", **values: Any) -> None:
    """Answer every query of ``pool`` with HEALTHY values, overridden by ``values``."""
    merged = {**HEALTHY, **values}
    for signal, queries in src.queries(pool).items():
        if signal in merged:
            api.set(queries[0], merged[signal])


@pytest.fixture
def api() -> Iterator[FakePrometheusAPI]:
    with fake_prometheus_api() as a:
        yield a


class TestPresets:
    def test_vllm_queries_use_vllm_names_and_the_pool_selector(self, api: FakePrometheusAPI) -> None:
        """The vLLM preset queries vllm:* metrics restricted to the pool's label matchers."""
        q = make(api).queries("prefill")
        assert q["prompt_tokens_per_s"] == ('sum(rate(vllm:prompt_tokens_total{role="prefill"}[1m]))',)
        assert "vllm:request_success_total" in q["request_rate_per_s"][0]
        assert "vllm:kv_cache_usage_perc" in q["kv_usage_ratio"][0]
        assert "vllm:gpu_cache_usage_perc" in q["kv_usage_ratio"][1]
        assert "vllm:inter_token_latency_seconds_bucket" in q["itl_p99_ms"][0]
        assert "vllm:time_per_output_token_seconds_bucket" in q["itl_p99_ms"][1]
        assert q["ttft_p99_ms"][0].startswith("histogram_quantile(0.99, sum by (le) (rate(")
        assert "vllm:request_prompt_tokens_sum" in q["isl_mean_tokens"][0]
        assert "vllm:request_generation_tokens_bucket" in q["osl_p90_tokens"][0]

    def test_sglang_preset_uses_sglang_names(self, api: FakePrometheusAPI) -> None:
        """The SGLang preset queries sglang:* metrics, including KV tokens in use."""
        q = make(api, preset="sglang").queries("prefill")
        assert "sglang:num_queue_reqs" in q["waiting_requests"][0]
        assert "sglang:num_running_reqs" in q["running_requests"][0]
        assert "sglang:token_usage" in q["kv_usage_ratio"][0]
        assert "sglang:num_used_tokens" in q["kv_tokens_in_use"][0]
        assert "sglang:time_to_first_token_seconds_bucket" in q["ttft_p50_ms"][0]

    def test_dynamo_preset_uses_frontend_names_and_model_label(self, api: FakePrometheusAPI) -> None:
        """The Dynamo preset reads dynamo_frontend_* and selects the model with the ``model`` label."""
        src = PrometheusMetricsSource(
            pools(PoolRole.PREFILL, selector={"model_name": "llama"}), {"url": api.url, "preset": "dynamo"}
        )
        q = src.queries("prefill")
        assert q["request_rate_per_s"] == ('sum(rate(dynamo_frontend_requests_total{model="llama"}[1m]))',)
        assert "dynamo_frontend_input_sequence_tokens_sum" in q["prompt_tokens_per_s"][0]
        assert "dynamo_frontend_inflight_requests" in q["running_requests"][0]
        assert "dynamo_frontend_queued_requests" in q["waiting_requests"][0]
        assert "dynamo_frontend_inter_token_latency_seconds_bucket" in q["itl_p50_ms"][0]

    def test_each_preset_reads_healthy_values(self, api: FakePrometheusAPI) -> None:
        """Every preset turns healthy answers into an OK observation."""
        for preset in ("vllm", "sglang", "dynamo"):
            src = make(api, PoolRole.DECODE, preset=preset)
            feed(api, src, "decode")
            obs = src.fetch(100.0)["decode"]
            assert (preset, obs.state) == (preset, DataState.OK)

    def test_overrides_replace_a_query_and_alternatives_fall_through(self, api: FakePrometheusAPI) -> None:
        """A configured query replaces the preset's; an empty first alternative falls through to the next."""
        src = make(api, queries={"waiting_requests": ["sum(my_queue{$selector})", "vector(7)"]})
        feed(api, src, waiting_requests=EMPTY)
        api.set("vector(7)", 7.0)
        obs = src.fetch(10.0)["prefill"]
        assert src.queries("prefill")["waiting_requests"][0] == 'sum(my_queue{role="prefill"})'
        assert obs.signals.waiting_requests == 7.0


class TestSignals:
    def test_healthy_answers_map_to_signals_with_units(self, api: FakePrometheusAPI) -> None:
        """Rates pass through, latencies in seconds become ms, gauges are kept."""
        src = make(api)
        feed(api, src)
        obs = src.fetch(100.0)["prefill"]
        s = obs.signals
        assert obs.state is DataState.OK
        assert (s.prompt_tokens_per_s, s.request_rate_per_s, s.isl_mean_tokens) == (5000.0, 4.0, 1250.0)
        assert (s.running_requests, s.waiting_requests, s.kv_usage_ratio, s.ready_replicas) == (12.0, 3.0, 0.4, 2.0)
        assert s.ttft_p99_ms == pytest.approx(900.0)
        assert s.itl_p50_ms == pytest.approx(20.0)

    def test_time_scale_divides_rates_only(self, api: FakePrometheusAPI) -> None:
        """With time_scale 10 (accelerated replay), per-second rates are divided by 10; gauges are not."""
        src = make(api, time_scale=10.0)
        feed(api, src)
        s = src.fetch(100.0)["prefill"].signals
        assert (s.prompt_tokens_per_s, s.request_rate_per_s, s.running_requests) == (500.0, 0.4, 12.0)

    def test_scalar_results_are_accepted(self, api: FakePrometheusAPI) -> None:
        """A query answering a scalar (e.g. ``scalar(...)``) yields its value."""
        src = make(api)
        feed(api, src, waiting_requests=("scalar", 5))
        assert src.fetch(1.0)["prefill"].signals.waiting_requests == 5.0

    def test_kv_tokens_are_derived_from_ratio_and_replicas(self, api: FakePrometheusAPI) -> None:
        """kv_tokens_per_replica turns KV usage x ready replicas into KV tokens in use."""
        src = make(api, PoolRole.DECODE, kv_tokens_per_replica=100_000)
        feed(api, src, "decode")
        assert src.fetch(1.0)["decode"].signals.kv_tokens_in_use == pytest.approx(0.4 * 2 * 100_000)


class TestBadData:
    @pytest.mark.parametrize(
        ("value", "words"),
        [
            (EMPTY, "empty result"),
            ([1.0, 2.0], "2 series"),
            ("NaN", "non-finite"),
            ("+Inf", "non-finite"),
            (-3.0, "negative"),
        ],
    )
    def test_required_signal_problem_makes_pool_missing(self, api: FakePrometheusAPI, value: Any, words: str) -> None:
        """Empty, multi-series, NaN, Inf or negative answers to a required signal: MISSING, never zero."""
        src = make(api)
        feed(api, src, running_requests=value)
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.MISSING
        assert obs.signals.running_requests is None
        assert "running_requests" in obs.reason
        assert words in obs.reason
        assert "vllm:num_requests_running" in obs.reason

    def test_optional_signal_problem_leaves_it_none_and_says_so(self, api: FakePrometheusAPI) -> None:
        """An optional signal without data is None, the pool stays OK, and the reason lists it."""
        src = make(api)
        feed(api, src, itl_p99_ms=EMPTY)
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.OK
        assert obs.signals.itl_p99_ms is None
        assert "itl_p99_ms (empty result" in obs.reason

    def test_nan_quantile_with_traffic_is_not_zero_traffic(self, api: FakePrometheusAPI) -> None:
        """A NaN quantile while requests flow is missing data (MISSING when required)."""
        src = make(api, required={"prefill": ["request_rate_per_s", "ttft_p99_ms"]})
        feed(api, src, ttft_p99_ms="NaN")
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.MISSING
        assert "ttft_p99_ms" in obs.reason

    def test_rejected_query_is_reported_not_retried(self, api: FakePrometheusAPI) -> None:
        """A 400 (bad PromQL) fails that signal at once; the other queries still run."""
        src = make(api, retries=3)
        feed(api, src)
        api.fail_next(1, status=400)
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.MISSING
        assert "prompt_tokens_per_s: query rejected" in obs.reason
        assert len(api.queries) == len({q for qs in src.queries("prefill").values() for q in qs[:1]})


class TestZeroTraffic:
    def test_zero_rates_and_nan_means_are_zero_traffic(self, api: FakePrometheusAPI) -> None:
        """0/0 means and NaN quantiles while the request rate is exactly 0: OK, rate 0, means None."""
        src = make(api)
        nan = dict.fromkeys(
            ("isl_mean_tokens", "isl_p90_tokens", "osl_mean_tokens", "ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms"), "NaN"
        )
        feed(
            api, src, prompt_tokens_per_s=0.0, request_rate_per_s=0.0, running_requests=0.0, waiting_requests=0.0, **nan
        )
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.OK
        assert obs.signals.request_rate_per_s == 0.0
        assert obs.signals.prompt_tokens_per_s == 0.0
        assert obs.signals.isl_mean_tokens is None
        assert obs.signals.ttft_p99_ms is None
        assert obs.reason.startswith("zero traffic")

    def test_zero_traffic_nan_is_ok_even_when_required(self, api: FakePrometheusAPI) -> None:
        """A required latency quantile that is NaN only because no request arrived does not make the pool MISSING."""
        src = make(api, required={"prefill": ["request_rate_per_s", "ttft_p99_ms"]})
        feed(api, src, request_rate_per_s=0.0, prompt_tokens_per_s=0.0, ttft_p99_ms="NaN")
        assert src.fetch(1.0)["prefill"].state is DataState.OK


class TestStaleness:
    def test_sample_time_is_now_minus_sample_age(self, api: FakePrometheusAPI) -> None:
        """sample_time_s is the caller's now minus the age of the oldest newest-sample."""
        src = make(api)
        feed(api, src)
        api.sample_age_s = 50.0
        obs = src.fetch(1000.0)["prefill"]
        assert obs.sample_time_s == pytest.approx(950.0, abs=1.0)

    def test_sample_age_is_scaled_to_the_callers_clock(self, api: FakePrometheusAPI) -> None:
        """With time_scale 10 a 5 s old sample is 50 s old on the caller's clock."""
        src = make(api, time_scale=10.0)
        feed(api, src)
        api.sample_age_s = 5.0
        assert src.fetch(1000.0)["prefill"].sample_time_s == pytest.approx(950.0, abs=5.0)

    def test_stale_after_marks_old_samples_stale(self, api: FakePrometheusAPI) -> None:
        """Samples older than stale_after_s give a STALE observation that says how old."""
        src = make(api, stale_after_s=30.0)
        feed(api, src)
        api.sample_age_s = 45.0
        obs = src.fetch(1000.0)["prefill"]
        assert obs.state is DataState.STALE
        assert "old" in obs.reason

    def test_missing_freshness_makes_pool_missing(self, api: FakePrometheusAPI) -> None:
        """Without a sample timestamp the pool's age is unknown: MISSING, naming the freshness query."""
        src = make(api)
        feed(api, src)
        api.set("timestamp(", EMPTY)
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.MISSING
        assert "freshness" in obs.reason


class TestFailures:
    def test_transient_errors_are_retried(self, api: FakePrometheusAPI) -> None:
        """Two 503s then success: the retries absorb them and the pool is OK."""
        src = make(api, retries=2)
        feed(api, src)
        api.fail_next(2, status=503)
        assert src.fetch(1.0)["prefill"].state is DataState.OK

    def test_exhausted_retries_make_every_pool_missing(self, api: FakePrometheusAPI) -> None:
        """More 503s than retries: all pools MISSING with 'unreachable', and the fetch stops early."""
        src = make(api, PoolRole.PREFILL, PoolRole.DECODE, retries=1)
        api.fail_next(10, status=503)
        obs = src.fetch(1.0)
        assert {o.state for o in obs.values()} == {DataState.MISSING}
        assert "unreachable" in obs["decode"].reason
        assert len(api.queries) == 2

    def test_timeout_bounds_a_slow_prometheus(self, api: FakePrometheusAPI) -> None:
        """A Prometheus slower than timeout_s fails within about (retries+1) x timeout_s."""
        src = make(api, timeout_s=0.2, retries=1)
        api.delay_s = 1.0
        started = time.monotonic()
        obs = src.fetch(1.0)["prefill"]
        elapsed = time.monotonic() - started
        assert obs.state is DataState.MISSING
        assert "Timeout" in obs.reason or "timed out" in obs.reason
        assert elapsed < 1.5

    def test_client_is_rebuilt_once_then_backed_off(self, api: FakePrometheusAPI) -> None:
        """After rebuild_after_failures failures the client is rebuilt; further failures back off."""
        src = make(api, retries=0, rebuild_after_failures=2, backoff_base_s=60.0)
        api.fail_next(100, status=503)
        for t in (0.0, 10.0):
            src.fetch(t)
        assert src.health().rebuilds == 1
        src.fetch(20.0)
        health = src.health()
        assert health.rebuilds == 1
        assert health.backoff_until_s == pytest.approx(80.0)
        asked = len(api.queries)
        obs = src.fetch(30.0)["prefill"]
        assert len(api.queries) == asked
        assert "backing off" in obs.reason

    def test_source_recovers_after_backoff(self, api: FakePrometheusAPI) -> None:
        """When the backoff expires and Prometheus answers again, pools are OK and counters reset."""
        src = make(api, retries=0, rebuild_after_failures=1, backoff_base_s=5.0)
        api.fail_next(2, status=503)
        src.fetch(0.0)
        src.fetch(1.0)
        feed(api, src)
        assert src.fetch(2.0)["prefill"].state is DataState.MISSING  # still backing off
        assert src.fetch(7.0)["prefill"].state is DataState.OK
        assert src.health().consecutive_failures == 0
        assert src.health().backoff_until_s is None

    def test_unreachable_url_is_missing_not_an_exception(self) -> None:
        """A closed port gives MISSING observations, not an exception out of fetch."""
        src = PrometheusMetricsSource(
            pools(PoolRole.PREFILL), {"url": "http://127.0.0.1:9", "retries": 0, "timeout_s": 0.5}
        )
        obs = src.fetch(1.0)["prefill"]
        assert obs.state is DataState.MISSING
        assert "ConnectionError" in obs.reason

    def test_credentials_in_the_url_never_reach_logs_or_reasons(self) -> None:
        """`user:password@` in the URL is shown as `***@` in the reason (served by GetStatus) and in every log."""
        from structlog.testing import capture_logs

        src = PrometheusMetricsSource(
            pools(PoolRole.PREFILL), {"url": "http://alice:hunter2@127.0.0.1:9", "retries": 0, "timeout_s": 0.5}
        )
        with capture_logs() as logs:
            obs = src.fetch(1.0)["prefill"]
        assert "***@127.0.0.1:9" in obs.reason
        assert "hunter2" not in obs.reason
        assert logs
        assert all("hunter2" not in str(e) for e in logs)


class TestParams:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({}, "metrics.params.url"),
            ({"url": "localhost:9090"}, "metrics.params.url"),
            ({"preset": "tgi"}, "metrics.params.preset"),
            ({"timeout_s": 0}, "metrics.params.timeout_s"),
            ({"retries": -1}, "metrics.params.retries"),
            ({"rate_window": "5 minutes"}, "metrics.params.rate_window"),
            ({"queries": {"tokens": "x"}}, "metrics.params.queries"),
            ({"queries": {"running_requests": "sum(x{$pool})"}}, "metrics.params.queries"),
            ({"required": {"decode": ["gpu_heat"]}}, "metrics.params.required"),
            ({"bogus": 1}, "metrics.params.bogus"),
        ],
    )
    def test_bad_params_name_the_field(self, params: dict[str, Any], field: str) -> None:
        """Invalid metrics.params raise PrometheusConfigError naming the field."""
        full = {"url": "http://127.0.0.1:9090", **params} if "url" not in params and params else params
        with pytest.raises(PrometheusConfigError, match=field.replace(".", r"\.")):
            PrometheusMetricsSource(pools(PoolRole.PREFILL), full)

    def test_bad_selector_names_the_pool(self) -> None:
        """An invalid pod regex is reported with the pool's name and field."""
        with pytest.raises(PrometheusConfigError, match=r"pools\[prefill\]\.selector\.pod_regex"):
            PrometheusMetricsSource(pools(PoolRole.PREFILL, selector={"pod_regex": "("}), {"url": "http://x:1"})

    def test_registry_builds_it_and_wraps_errors(self) -> None:
        """The ``prometheus`` entry point builds the source; bad params surface as a PluginError."""
        reg = Registry()
        src = reg.create(PluginGroup.METRICS_SOURCES, "prometheus", pools(PoolRole.DECODE), {"url": "http://x:1"}, None)
        assert isinstance(src, PrometheusMetricsSource)
        with pytest.raises(PluginError, match=r"metrics\.params\.timeout_s"):
            reg.create(
                PluginGroup.METRICS_SOURCES,
                "prometheus",
                pools(PoolRole.DECODE),
                {"url": "http://x:1", "timeout_s": -1},
                None,
            )

    def test_selector_matchers_render_pod_regex_labels_and_default(self, api: FakePrometheusAPI) -> None:
        """pod_regex, extra labels and the default pool matcher appear in the queries."""
        src = PrometheusMetricsSource(
            {
                "a": PoolSettings(
                    name="a",
                    role=PoolRole.DECODE,
                    gpus_per_replica=1,
                    max_replicas=2,
                    selector={"pod_regex": "decode-.*", "labels": {"namespace": "llm"}, "model_name": 'x"y'},
                ),
                "b": PoolSettings(name="b", role=PoolRole.DECODE, gpus_per_replica=1, max_replicas=2),
            },
            {"url": api.url},
        )
        assert '{model_name="x\\"y",pod=~"decode-.*",namespace="llm"}' in src.queries("a")["running_requests"][0]
        assert src.queries("b")["running_requests"] == ('sum(vllm:num_requests_running{pool="b"})',)

    def test_bearer_token_is_sent(self, api: FakePrometheusAPI, monkeypatch: pytest.MonkeyPatch) -> None:
        """bearer_token (a secret reference) is sent as an Authorization header."""
        monkeypatch.setenv("PROM_TOKEN", "s3cret")
        src = make(api, bearer_token={"env": "PROM_TOKEN"})
        feed(api, src)
        src.fetch(1.0)
        assert api.headers[0].get("Authorization") == "Bearer s3cret"

    def test_missing_bearer_token_fails_early(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bearer_token whose environment variable is unset fails at construction, naming it."""
        monkeypatch.delenv("PROM_TOKEN_ABSENT", raising=False)
        with pytest.raises(ValueError, match="PROM_TOKEN_ABSENT"):
            PrometheusMetricsSource(
                pools(PoolRole.PREFILL), {"url": "http://x:1", "bearer_token": {"env": "PROM_TOKEN_ABSENT"}}
            )
