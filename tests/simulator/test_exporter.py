"""The simulator's Prometheus exporter: vLLM names, labels and text format survive a real parser."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pdscale.simulator import Cluster, ClusterConfig, Pool
from pdscale.simulator.exporter import CONTENT_TYPE, SimExporter, render_metrics
from tests.simulator.cluster_fixtures import StandInPerf, poisson_trace


@pytest.fixture
def cluster() -> Cluster:
    c = Cluster(ClusterConfig(perf=StandInPerf(), prefill_replicas=1, decode_replicas=2), poisson_trace(4, 60))  # type: ignore[arg-type]
    c.advance_to(30.0)
    return c


def exposition(cluster: Cluster) -> str:
    return render_metrics([cluster.pool_metrics(Pool.PREFILL), cluster.pool_metrics(Pool.DECODE)], "llama")


class TestRender:
    def test_vllm_names_keep_the_colon_through_the_parser(self, cluster: Cluster) -> None:
        """Parsed family names are the vLLM names, colon included."""
        names = {f.name for f in text_string_to_metric_families(exposition(cluster))}
        assert {
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
            "vllm:prompt_tokens",
            "vllm:generation_tokens",
            "vllm:request_success",
            "vllm:time_to_first_token_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:request_prompt_tokens",
            "vllm:request_generation_tokens",
            "pdscale_sim_ready_replicas",
        } <= names

    def test_series_are_labelled_per_pool(self, cluster: Cluster) -> None:
        """Every sample carries model_name, pool and role; counter values match pool_metrics."""
        families = {f.name: f for f in text_string_to_metric_families(exposition(cluster))}
        samples = families["vllm:prompt_tokens"].samples
        by_pool = {s.labels["pool"]: s for s in samples}
        assert set(by_pool) == {"prefill", "decode"}
        assert all(s.labels["model_name"] == "llama" and s.labels["role"] == s.labels["pool"] for s in samples)
        assert by_pool["prefill"].value == cluster.pool_metrics(Pool.PREFILL).prompt_tokens_total
        ready = {s.labels["pool"]: s.value for s in families["pdscale_sim_ready_replicas"].samples}
        assert ready == {"prefill": 1.0, "decode": 2.0}

    def test_histogram_buckets_are_cumulative_and_end_in_count(self, cluster: Cluster) -> None:
        """TTFT buckets never decrease and the +Inf bucket equals _count."""
        family = next(
            f
            for f in text_string_to_metric_families(exposition(cluster))
            if f.name == "vllm:time_to_first_token_seconds"
        )
        decode = [s for s in family.samples if s.labels["pool"] == "decode"]
        buckets = [s.value for s in decode if s.name.endswith("_bucket")]
        count = next(s.value for s in decode if s.name.endswith("_count"))
        assert buckets == sorted(buckets)
        assert buckets[-1] == count > 0

    @pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
    def test_promtool_accepts_the_exposition(self, cluster: Cluster) -> None:
        """promtool check metrics finds no format error."""
        proc = subprocess.run(
            ["promtool", "check", "metrics"], input=exposition(cluster), capture_output=True, text=True, check=False
        )
        assert "error" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr


class TestServer:
    def test_scrape_over_http(self, cluster: Cluster) -> None:
        """A scrape of the started exporter returns the 0.0.4 content type and parsable text."""
        exporter = SimExporter(cluster.pool_metrics, [Pool.PREFILL, Pool.DECODE], "llama")
        exporter.start()
        try:
            with urllib.request.urlopen(exporter.url, timeout=5) as resp:  # noqa: S310  (http to 127.0.0.1)
                assert resp.headers["Content-Type"] == CONTENT_TYPE
                body = resp.read().decode()
        finally:
            exporter.stop()
        assert any(f.name == "vllm:num_requests_running" for f in text_string_to_metric_families(body))

    def test_stop_releases_the_port(self, cluster: Cluster) -> None:
        """After stop the exporter no longer answers."""
        exporter = SimExporter(cluster.pool_metrics, [Pool.DECODE], "llama")
        exporter.start()
        url = exporter.url
        exporter.stop()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=2)  # noqa: S310  (http to 127.0.0.1)
