"""Per-pool counters and gauges, named and shaped like vLLM's Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass

from pdscale.simulator.config import Pool
from pdscale.simulator.histogram import (
    ITERATION_TOKEN_BUCKETS,
    ITL_BUCKETS_S,
    REQUEST_LATENCY_BUCKETS_S,
    TTFT_BUCKETS_S,
    BucketHistogram,
    HistogramSnapshot,
    token_buckets,
)

__all__ = ["PoolMetrics", "PoolStats"]


@dataclass(frozen=True, slots=True)
class PoolMetrics:
    """Cumulative counters and current gauges of one pool at `now_s`.

    Where a request is counted in disaggregated mode: the prefill pool counts prompt tokens as they are
    processed, arrivals when routed to it, finishes when the prompt is done, TTFT up to the end of prefill
    (what a vLLM prefill instance reports) and the prompt-length histogram; the decode pool counts arrivals
    when the KV cache lands, generated tokens (the first included), finishes, end-to-end TTFT (arrival to
    first token delivered), ITL per token and the generation-length histogram. A colocated pool counts all.

    Attributes:
        kv_cache_usage_perc: KV tokens in use / KV capacity of the ready and draining replicas, 0..1
            (vLLM names it "perc" but exports a fraction).
        iteration_tokens: prompt tokens per prefill batch, one observation per batch (prefill pool only;
            vLLM's vllm:iteration_tokens_total: its count is the batches run, its sum the tokens they carried).
        request_prefill_time_seconds: per request, from its first prefill chunk's start to the end of its last
            (prefill pool only; vLLM's vllm:request_prefill_time_seconds).
        busy_s_total: replica-seconds spent computing (prefill batches, decode steps).
        serving_s_total: replica-seconds spent ready or draining; busy/serving is utilisation.
        gpu_s_total: GPU-seconds paid (starting, ready and draining replicas).
    """

    pool: Pool
    now_s: float
    prompt_tokens_total: float
    generation_tokens_total: float
    requests_arrived_total: float
    prompt_tokens_arrived_total: float
    requests_finished_total: float
    requests_dropped_total: float
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage_perc: float
    kv_tokens_in_use: int
    kv_tokens_capacity: int
    ttft_seconds: HistogramSnapshot
    itl_seconds: HistogramSnapshot
    request_prompt_tokens: HistogramSnapshot
    request_generation_tokens: HistogramSnapshot
    iteration_tokens: HistogramSnapshot
    request_prefill_time_seconds: HistogramSnapshot
    ready_replicas: int
    starting_replicas: int
    draining_replicas: int
    busy_s_total: float
    serving_s_total: float
    gpu_s_total: float


class PoolStats:
    """Mutable accumulators behind PoolMetrics."""

    __slots__ = (
        "arrived",
        "busy_s",
        "dropped",
        "finished",
        "gen_hist",
        "generation_tokens",
        "gpu_s",
        "iter_tokens",
        "itl",
        "prefill_time",
        "prompt_arrived",
        "prompt_hist",
        "prompt_tokens",
        "serving_s",
        "ttft",
    )

    def __init__(self, max_tokens: int) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.arrived = 0
        self.prompt_arrived = 0
        self.finished = 0
        self.dropped = 0
        self.busy_s = 0.0
        self.serving_s = 0.0
        self.gpu_s = 0.0
        self.ttft = BucketHistogram(TTFT_BUCKETS_S)
        self.itl = BucketHistogram(ITL_BUCKETS_S)
        self.prompt_hist = BucketHistogram(token_buckets(max_tokens))
        self.gen_hist = BucketHistogram(token_buckets(max_tokens))
        self.iter_tokens = BucketHistogram(ITERATION_TOKEN_BUCKETS)
        self.prefill_time = BucketHistogram(REQUEST_LATENCY_BUCKETS_S)
