"""PromQL query presets for vLLM, SGLang and Dynamo's frontend, and the label selectors that pick a pool.

A query template names the pool's label matchers ``$selector`` and the rate window ``$window``; every signal's
query can be replaced in the settings (``metrics.params.queries``). A signal may list alternatives: the first
one that returns data wins (older vLLM exports ``vllm:time_per_output_token_seconds`` instead of
``vllm:inter_token_latency_seconds``; ``vector(0)`` as the last alternative turns "no series" into a zero).

Each query must return one series after its aggregation; latencies come back in seconds and are reported in ms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from string import Template
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pdscale.controller.core.types import PoolRole

__all__ = [
    "DEFAULT_REQUIRED",
    "FRESHNESS",
    "PRESETS",
    "SIGNAL_KINDS",
    "Answer",
    "LabelNames",
    "Matcher",
    "PoolSelector",
    "Preset",
    "SignalKind",
    "matchers",
    "parse_instant",
    "render",
    "render_selector",
    "template_error",
]

FRESHNESS = "freshness"
"""The pseudo-signal whose query returns the oldest sample timestamp of the pool's series (staleness)."""


class SignalKind(StrEnum):
    """How a signal's raw query value is interpreted."""

    RATE = "rate"
    """Per second of Prometheus time (divided by ``time_scale``); exactly 0 is zero traffic."""
    TRAFFIC = "traffic"
    """A mean or quantile over requests: NaN while no request arrives means "no requests", not missing data."""
    LATENCY = "latency"
    """A quantile in seconds, reported in milliseconds; NaN at zero traffic as for TRAFFIC."""
    GAUGE = "gauge"
    """An instantaneous value (running requests, KV usage, replicas)."""


SIGNAL_KINDS: Mapping[str, SignalKind] = {
    "prompt_tokens_per_s": SignalKind.RATE,
    "generation_tokens_per_s": SignalKind.RATE,
    "request_rate_per_s": SignalKind.RATE,
    "arrival_rate_per_s": SignalKind.RATE,
    "prompt_arrival_tokens_per_s": SignalKind.RATE,
    "isl_mean_tokens": SignalKind.TRAFFIC,
    "isl_p90_tokens": SignalKind.TRAFFIC,
    "isl_p99_tokens": SignalKind.TRAFFIC,
    "osl_mean_tokens": SignalKind.TRAFFIC,
    "osl_p90_tokens": SignalKind.TRAFFIC,
    "running_requests": SignalKind.GAUGE,
    "waiting_requests": SignalKind.GAUGE,
    "kv_usage_ratio": SignalKind.GAUGE,
    "kv_tokens_in_use": SignalKind.GAUGE,
    "ttft_mean_ms": SignalKind.LATENCY,
    "ttft_p50_ms": SignalKind.LATENCY,
    "ttft_p99_ms": SignalKind.LATENCY,
    "itl_mean_ms": SignalKind.LATENCY,
    "itl_p50_ms": SignalKind.LATENCY,
    "itl_p99_ms": SignalKind.LATENCY,
    "ready_replicas": SignalKind.GAUGE,
    "prefill_utilization": SignalKind.GAUGE,
    "decode_utilization": SignalKind.GAUGE,
    "prefill_batch_tokens_mean": SignalKind.TRAFFIC,
    "prefill_batch_ms_mean": SignalKind.LATENCY,
    "prefix_cache_hit_ratio": SignalKind.TRAFFIC,
}
"""Every ``pdscale.controller.core.types.Signals`` field a query can fill, in query order (rates first)."""

_BASE = ("request_rate_per_s", "running_requests", "waiting_requests", "ready_replicas")
DEFAULT_REQUIRED: Mapping[PoolRole, tuple[str, ...]] = {
    PoolRole.PREFILL: ("prompt_tokens_per_s", *_BASE),
    PoolRole.DECODE: (*_BASE, "kv_usage_ratio"),
    PoolRole.COLOCATED: ("prompt_tokens_per_s", *_BASE, "kv_usage_ratio"),
}
"""Signals without which a pool's observation is MISSING; any other signal that fails is only left ``None``."""


def _rate(metric: str) -> str:
    return f"sum(rate({metric}{{$selector}}[$window]))"


def _ratio(sum_metric: str, count_metric: str) -> str:
    return f"{_rate(sum_metric)} / {_rate(count_metric)}"


def _quantile(q: float, bucket_metric: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({bucket_metric}{{$selector}}[$window])))"


def _agg(fn: str, metric: str) -> str:
    return f"{fn}({metric}{{$selector}})"


def _deriv(gauge: str) -> str:
    return f"sum(deriv({gauge}{{$selector}}[$window]))"


def _mean(sum_metric: str, count_metric: str) -> str:
    """sum/count rates, 0 (not NaN) when nothing was counted in the window."""
    return f"({_rate(sum_metric)} / clamp_min({_rate(count_metric)}, 1e-9))"


def _arrivals(finished: str, *queues: str) -> str:
    """Arrivals where an engine exports no arrival counter: completions plus the growth of its queues.

    Every request that arrived in the window either finished or is still queued or running, so
    arrivals = finished + d(waiting + running)/dt; clamped at zero against scrape jitter.
    """
    return f"clamp_min({' + '.join([_rate(finished), *(_deriv(q) for q in queues)])}, 0)"


def _prompt_arrivals(processed: str, waiting: str, isl_mean: str) -> str:
    """Prompt tokens arriving: tokens prefilled plus the growth of the waiting queue times the mean prompt."""
    return f"clamp_min({_rate(processed)} + {_deriv(waiting)} * {isl_mean}, 0)"


@dataclass(frozen=True, slots=True)
class Preset:
    """One engine's metric names as PromQL templates, per signal (alternatives tried in order)."""

    name: str
    model_label: str
    """The label carrying the model name on this engine's series."""
    queries: Mapping[str, tuple[str, ...]]


def _vllm() -> Preset:
    return Preset(
        name="vllm",
        model_label="model_name",
        queries={
            "prompt_tokens_per_s": (_rate("vllm:prompt_tokens_total"),),
            "generation_tokens_per_s": (_rate("vllm:generation_tokens_total"),),
            "request_rate_per_s": (_rate("vllm:request_success_total"),),
            "arrival_rate_per_s": (
                _arrivals("vllm:request_success_total", "vllm:num_requests_waiting", "vllm:num_requests_running"),
            ),
            "prompt_arrival_tokens_per_s": (
                _prompt_arrivals(
                    "vllm:prompt_tokens_total",
                    "vllm:num_requests_waiting",
                    _mean("vllm:request_prompt_tokens_sum", "vllm:request_prompt_tokens_count"),
                ),
            ),
            "isl_mean_tokens": (_ratio("vllm:request_prompt_tokens_sum", "vllm:request_prompt_tokens_count"),),
            "isl_p90_tokens": (_quantile(0.9, "vllm:request_prompt_tokens_bucket"),),
            "isl_p99_tokens": (_quantile(0.99, "vllm:request_prompt_tokens_bucket"),),
            "osl_mean_tokens": (_ratio("vllm:request_generation_tokens_sum", "vllm:request_generation_tokens_count"),),
            "osl_p90_tokens": (_quantile(0.9, "vllm:request_generation_tokens_bucket"),),
            "running_requests": (_agg("sum", "vllm:num_requests_running"),),
            "waiting_requests": (_agg("sum", "vllm:num_requests_waiting"),),
            "kv_usage_ratio": (_agg("avg", "vllm:kv_cache_usage_perc"), _agg("avg", "vllm:gpu_cache_usage_perc")),
            "ttft_mean_ms": (_ratio("vllm:time_to_first_token_seconds_sum", "vllm:time_to_first_token_seconds_count"),),
            "ttft_p50_ms": (_quantile(0.5, "vllm:time_to_first_token_seconds_bucket"),),
            "ttft_p99_ms": (_quantile(0.99, "vllm:time_to_first_token_seconds_bucket"),),
            "itl_mean_ms": (
                _ratio("vllm:inter_token_latency_seconds_sum", "vllm:inter_token_latency_seconds_count"),
                _ratio("vllm:time_per_output_token_seconds_sum", "vllm:time_per_output_token_seconds_count"),
            ),
            "itl_p50_ms": (
                _quantile(0.5, "vllm:inter_token_latency_seconds_bucket"),
                _quantile(0.5, "vllm:time_per_output_token_seconds_bucket"),
            ),
            "itl_p99_ms": (
                _quantile(0.99, "vllm:inter_token_latency_seconds_bucket"),
                _quantile(0.99, "vllm:time_per_output_token_seconds_bucket"),
            ),
            "ready_replicas": (_agg("count", "vllm:num_requests_running"),),
            "prefill_batch_tokens_mean": (
                _ratio("vllm:iteration_tokens_total_sum", "vllm:iteration_tokens_total_count"),
            ),
            "prefill_batch_ms_mean": (
                _ratio("vllm:request_prefill_time_seconds_sum", "vllm:request_prefill_time_seconds_count"),
            ),
            "prefix_cache_hit_ratio": (_ratio("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),),
            FRESHNESS: ("min(timestamp(vllm:num_requests_running{$selector}))",),
        },
    )


def _sglang() -> Preset:
    return Preset(
        name="sglang",
        model_label="model_name",
        queries={
            "prompt_tokens_per_s": (_rate("sglang:prompt_tokens_total"),),
            "generation_tokens_per_s": (_rate("sglang:generation_tokens_total"),),
            "request_rate_per_s": (_rate("sglang:num_requests_total"),),
            "arrival_rate_per_s": (
                _arrivals("sglang:num_requests_total", "sglang:num_queue_reqs", "sglang:num_running_reqs"),
            ),
            "prompt_arrival_tokens_per_s": (
                _prompt_arrivals(
                    "sglang:prompt_tokens_total",
                    "sglang:num_queue_reqs",
                    _mean("sglang:prompt_tokens_total", "sglang:num_requests_total"),
                ),
            ),
            "isl_mean_tokens": (_ratio("sglang:prompt_tokens_total", "sglang:num_requests_total"),),
            "isl_p90_tokens": (_quantile(0.9, "sglang:prompt_tokens_histogram_bucket"),),
            "osl_mean_tokens": (_ratio("sglang:generation_tokens_total", "sglang:num_requests_total"),),
            "osl_p90_tokens": (_quantile(0.9, "sglang:generation_tokens_histogram_bucket"),),
            "running_requests": (_agg("sum", "sglang:num_running_reqs"),),
            "waiting_requests": (_agg("sum", "sglang:num_queue_reqs"),),
            "kv_usage_ratio": (_agg("avg", "sglang:token_usage"),),
            "kv_tokens_in_use": (_agg("sum", "sglang:num_used_tokens"),),
            "ttft_mean_ms": (
                _ratio("sglang:time_to_first_token_seconds_sum", "sglang:time_to_first_token_seconds_count"),
            ),
            "ttft_p50_ms": (_quantile(0.5, "sglang:time_to_first_token_seconds_bucket"),),
            "ttft_p99_ms": (_quantile(0.99, "sglang:time_to_first_token_seconds_bucket"),),
            "itl_mean_ms": (
                _ratio("sglang:inter_token_latency_seconds_sum", "sglang:inter_token_latency_seconds_count"),
                _ratio("sglang:time_per_output_token_seconds_sum", "sglang:time_per_output_token_seconds_count"),
            ),
            "itl_p50_ms": (
                _quantile(0.5, "sglang:inter_token_latency_seconds_bucket"),
                _quantile(0.5, "sglang:time_per_output_token_seconds_bucket"),
            ),
            "itl_p99_ms": (
                _quantile(0.99, "sglang:inter_token_latency_seconds_bucket"),
                _quantile(0.99, "sglang:time_per_output_token_seconds_bucket"),
            ),
            "ready_replicas": (_agg("count", "sglang:num_running_reqs"),),
            "prefix_cache_hit_ratio": (_agg("avg", "sglang:cache_hit_rate"),),
            FRESHNESS: ("min(timestamp(sglang:num_running_reqs{$selector}))",),
        },
    )


def _dynamo() -> Preset:
    isl, osl = "dynamo_frontend_input_sequence_tokens", "dynamo_frontend_output_sequence_tokens"
    ttft, itl = "dynamo_frontend_time_to_first_token_seconds", "dynamo_frontend_inter_token_latency_seconds"
    return Preset(
        name="dynamo",
        model_label="model",
        queries={
            "prompt_tokens_per_s": (_rate(f"{isl}_sum"),),
            "generation_tokens_per_s": (_rate(f"{osl}_sum"),),
            "request_rate_per_s": (_rate("dynamo_frontend_requests_total"),),
            # The frontend counts arrivals (requests_started_total, Dynamo >= 1.6); older frontends: completions
            # plus in-flight growth.
            "arrival_rate_per_s": (
                _rate("dynamo_frontend_requests_started_total"),
                _arrivals("dynamo_frontend_requests_total", "dynamo_frontend_inflight_requests"),
            ),
            "prompt_arrival_tokens_per_s": (
                f"{_rate('dynamo_frontend_requests_started_total')} * {_mean(f'{isl}_sum', f'{isl}_count')}",
                _rate(f"{isl}_sum"),
            ),
            "isl_mean_tokens": (_ratio(f"{isl}_sum", f"{isl}_count"),),
            "isl_p90_tokens": (_quantile(0.9, f"{isl}_bucket"),),
            "osl_mean_tokens": (_ratio(f"{osl}_sum", f"{osl}_count"),),
            "osl_p90_tokens": (_quantile(0.9, f"{osl}_bucket"),),
            "running_requests": (_agg("sum", "dynamo_frontend_inflight_requests"),),
            "waiting_requests": (_agg("sum", "dynamo_frontend_queued_requests"),),
            "kv_usage_ratio": (_agg("avg", "dynamo_component_kvstats_gpu_cache_usage_percent"),),
            "ttft_mean_ms": (_ratio(f"{ttft}_sum", f"{ttft}_count"),),
            "ttft_p50_ms": (_quantile(0.5, "dynamo_frontend_time_to_first_token_seconds_bucket"),),
            "ttft_p99_ms": (_quantile(0.99, "dynamo_frontend_time_to_first_token_seconds_bucket"),),
            "itl_mean_ms": (_ratio(f"{itl}_sum", f"{itl}_count"),),
            "itl_p50_ms": (_quantile(0.5, "dynamo_frontend_inter_token_latency_seconds_bucket"),),
            "itl_p99_ms": (_quantile(0.99, "dynamo_frontend_inter_token_latency_seconds_bucket"),),
            "ready_replicas": (_agg("count", "dynamo_component_kvstats_total_blocks"),),
            FRESHNESS: ("min(timestamp(dynamo_frontend_inflight_requests{$selector}))",),
        },
    )


PRESETS: Mapping[str, Preset] = {p.name: p for p in (_vllm(), _sglang(), _dynamo())}
"""Built-in presets by name: ``vllm``, ``sglang``, ``dynamo``."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One PromQL label matcher: ``label op "value"`` with op ``=`` or ``=~``."""

    label: str
    op: str
    value: str


_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLACEHOLDERS = frozenset({"selector", "window"})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_selector(matchers: Sequence[Matcher]) -> str:
    """The inside of a PromQL ``{...}`` for these matchers, values escaped."""
    for m in matchers:
        if not _LABEL_RE.match(m.label):
            raise ValueError(f"invalid Prometheus label name {m.label!r}")
        if m.op not in ("=", "=~"):
            raise ValueError(f"unsupported matcher operator {m.op!r}")
    return ",".join(f'{m.label}{m.op}"{_escape(m.value)}"' for m in matchers)


def template_error(template: str) -> str | None:
    """Why ``template`` is not a usable query template, or None when it is."""
    if not template.strip():
        return "empty query"
    t = Template(template)
    if not t.is_valid():
        return "a '$' that is not $selector or $window (write $$ for a literal '$')"
    unknown = sorted(set(t.get_identifiers()) - _PLACEHOLDERS)
    if unknown:
        return f"unknown placeholder(s) {', '.join('$' + u for u in unknown)}; use $selector and $window"
    return None


def render(template: str, selector: str, window: str) -> str:
    """Fill ``$selector`` and ``$window`` into a query template."""
    return Template(template).substitute(selector=selector, window=window)


class _Selection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelNames(_Selection):
    """Which Prometheus labels carry a pool's role, pool name, model name and pod name."""

    role: str = "role"
    pool: str = "pool"
    model_name: str | None = None
    """Default: the preset's model label (``model_name`` for vLLM and SGLang, ``model`` for Dynamo)."""
    pod: str = "pod"


class PoolSelector(_Selection):
    """How one pool's series are picked (``pools[].selector``); with nothing set: ``pool="<pool name>"``."""

    role: str | None = None
    pool: str | None = None
    model_name: str | None = None
    pod_regex: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    """Further exact label matchers, e.g. ``{namespace: llm}``."""

    @field_validator("pod_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
        if bad:
            raise ValueError(f"invalid Prometheus label name(s): {', '.join(bad)}")
        return v


def matchers(pool: str, sel: PoolSelector, names: LabelNames, model_label: str) -> list[Matcher]:
    """The label matchers that pick ``pool``'s series (``pool="<pool name>"`` when the selector is empty)."""
    out: list[Matcher] = []
    if sel.role is not None:
        out.append(Matcher(names.role, "=", sel.role))
    if sel.pool is not None:
        out.append(Matcher(names.pool, "=", sel.pool))
    if sel.model_name is not None:
        out.append(Matcher(names.model_name or model_label, "=", sel.model_name))
    if sel.pod_regex is not None:
        out.append(Matcher(names.pod, "=~", sel.pod_regex))
    out.extend(Matcher(k, "=", v) for k, v in sorted(sel.labels.items()))
    return out or [Matcher(names.pool, "=", pool)]


@dataclass(frozen=True, slots=True)
class Answer:
    """One instant query's value (or why there is none) and its evaluation timestamp."""

    value: float | None
    eval_ts: float | None
    problem: str | None = None
    nonfinite: bool = False


def parse_instant(result: Any) -> Answer:
    """One series' value from an instant query's ``data.result`` (vector or scalar)."""
    if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
        sample: Any = result  # scalar result: [ts, "value"]
    else:
        if not isinstance(result, list):
            return Answer(None, None, f"unexpected result {type(result).__name__}")
        if not result:
            return Answer(None, None, "empty result (no series)")
        if len(result) > 1:
            return Answer(None, None, f"{len(result)} series, expected 1 (aggregate the query with sum/avg)")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
        if not (isinstance(sample, list) and len(sample) == 2):
            return Answer(None, None, "result without a value (range vector?)")
    try:
        ts, value = float(sample[0]), float(sample[1])
    except (TypeError, ValueError):
        return Answer(None, None, f"unparseable sample {sample!r}")
    if not math.isfinite(value):
        return Answer(None, ts, f"non-finite value {sample[1]}", nonfinite=math.isnan(value))
    if value < 0:
        return Answer(None, ts, f"negative value {value}")
    return Answer(value, ts)
