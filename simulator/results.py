"""Summary of a finished simulation: per-request latencies, cost, utilisation over time, SLO attainment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pdscale.simulator.config import DROP_CODES, Pool
from pdscale.simulator.feasibility import feasibility

if TYPE_CHECKING:
    from pdscale.simulator.engine import Engine

__all__ = ["PoolSample", "SimResult", "build_result"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One pool over one sample interval ending at t_s.

    Attributes:
        busy_share: compute-busy time / ready-or-draining time (prefill: batches; decode: steps).
        kv_share: KV tokens in use / KV capacity of serving replicas at t_s; the load-dependent part of
            a decode step's memory traffic, used as the decode bandwidth-use share.
        arrivals_per_s, prompt_tokens_per_s: demand that reached the pool in the interval.
    """

    t_s: float
    pool: Pool
    ready: int
    starting: int
    draining: int
    busy_share: float
    kv_share: float
    arrivals_per_s: float
    prompt_tokens_per_s: float


@dataclass(frozen=True, slots=True)
class SimResult:
    """Outcome of a run. Per-request arrays are indexed like the trace; NaN where not applicable.

    Attributes:
        ttft_s: arrival to first token delivered (NaN when dropped).
        itl_s: mean time per output token after the first ((finish - first token) / (output - 1)).
        drop_reasons: reason -> count.
        itl_p99_token_ms: 99th percentile over all generated tokens (step times weighted by batch).
        gpu_s: pool -> GPU-seconds paid.
    """

    mode: str
    trace_name: str
    ttft_s: FloatArray
    itl_s: FloatArray
    finish_s: FloatArray
    drop_reasons: dict[str, int]
    itl_p50_token_ms: float
    itl_p99_token_ms: float
    gpu_s: dict[Pool, float]
    samples: tuple[PoolSample, ...]
    ttft_slo_ms: float
    itl_slo_ms: float
    scale_actions: int
    sim_end_s: float
    sim_wall_s: float
    met_slo: npt.NDArray[np.bool_] = field(repr=False)
    feasible: npt.NDArray[np.bool_] = field(repr=False)
    """Requests some fleet of this hardware can serve within the SLO (``pdscale.simulator.feasibility``)."""

    @property
    def requests(self) -> int:
        """Requests in the trace."""
        return len(self.ttft_s)

    @property
    def completed(self) -> int:
        """Requests that finished."""
        return int(np.count_nonzero(~np.isnan(self.finish_s)))

    @property
    def dropped(self) -> int:
        """Requests reported dropped."""
        return sum(self.drop_reasons.values())

    @property
    def slo_attainment(self) -> float:
        """Share of all requests (dropped ones count as misses) with TTFT and mean ITL within target."""
        return float(self.met_slo.mean()) if len(self.met_slo) else math.nan

    @property
    def infeasible(self) -> int:
        """Requests no fleet of this hardware serves within the SLO (counted apart, never chased)."""
        return int(np.count_nonzero(~self.feasible))

    @property
    def slo_attainment_feasible(self) -> float:
        """Share of the feasible requests with TTFT and mean ITL within target."""
        n = int(np.count_nonzero(self.feasible))
        return float(np.count_nonzero(self.met_slo & self.feasible)) / n if n else math.nan

    def first(self, n: int) -> SimResult:
        """The result over the first ``n`` requests of the trace only (those that arrived before
        ``Cluster.close_arrivals``); cost, samples and drops are the run's (only arrived requests drop)."""
        n = max(0, min(int(n), self.requests))
        return replace(
            self,
            ttft_s=self.ttft_s[:n],
            itl_s=self.itl_s[:n],
            finish_s=self.finish_s[:n],
            met_slo=self.met_slo[:n],
            feasible=self.feasible[:n],
        )

    def ttft_quantile_ms(self, q: float) -> float:
        """TTFT quantile over completed requests, in ms."""
        return _quantile_ms(self.ttft_s, q)

    def itl_quantile_ms(self, q: float) -> float:
        """Quantile of per-request mean ITL, in ms."""
        return _quantile_ms(self.itl_s, q)

    def to_json(self) -> dict[str, Any]:
        """A flat JSON-ready summary."""
        gpu_h = {p.value: s / 3600.0 for p, s in self.gpu_s.items()}
        return {
            "mode": self.mode,
            "trace": self.trace_name,
            "requests": self.requests,
            "completed": self.completed,
            "dropped": self.dropped,
            "drop_reasons": dict(self.drop_reasons),
            "slo_attainment": _num(self.slo_attainment),
            "slo_attainment_feasible": _num(self.slo_attainment_feasible),
            "infeasible": self.infeasible,
            "ttft_slo_ms": self.ttft_slo_ms,
            "itl_slo_ms": self.itl_slo_ms,
            "ttft_p50_ms": _num(self.ttft_quantile_ms(0.5)),
            "ttft_p99_ms": _num(self.ttft_quantile_ms(0.99)),
            "itl_p50_ms": _num(self.itl_quantile_ms(0.5)),
            "itl_p99_ms": _num(self.itl_quantile_ms(0.99)),
            "itl_token_p50_ms": _num(self.itl_p50_token_ms),
            "itl_token_p99_ms": _num(self.itl_p99_token_ms),
            "gpu_hours": sum(gpu_h.values()),
            "prefill_gpu_hours": gpu_h.get(Pool.PREFILL.value, 0.0),
            "decode_gpu_hours": gpu_h.get(Pool.DECODE.value, 0.0),
            "colocated_gpu_hours": gpu_h.get(Pool.COLOCATED.value, 0.0),
            "scale_actions": self.scale_actions,
            "sim_end_s": self.sim_end_s,
            "sim_wall_s": self.sim_wall_s,
        }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _quantile_ms(values: FloatArray, q: float) -> float:
    finite = values[~np.isnan(values)]
    return float(np.quantile(finite, q) * 1000.0) if len(finite) else math.nan


def build_result(engine: Engine, wall_s: float) -> SimResult:
    """Summarise a finished engine."""
    cfg = engine.config
    first = np.frombuffer(engine.first_token_s, dtype=np.float64).copy()
    finish = np.frombuffer(engine.finish_s, dtype=np.float64).copy()
    arrival = np.asarray(engine.trace.arrival_s, dtype=np.float64)
    out = np.asarray(engine.trace.output_tokens, dtype=np.float64)
    ttft = np.where(np.isnan(finish), np.nan, first - arrival)
    with np.errstate(invalid="ignore", divide="ignore"):
        itl = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan)
    drop_codes = np.frombuffer(engine.drop_code, dtype=np.int8)
    reasons = {reason.value: int(np.count_nonzero(drop_codes == code)) for reason, code in DROP_CODES.items()}
    reasons = {k: v for k, v in reasons.items() if v}
    ttft_ok = ttft * 1000.0 <= cfg.ttft_slo_ms
    itl_ok = np.isnan(itl) | (itl * 1000.0 <= cfg.itl_slo_ms)
    met = ~np.isnan(finish) & ttft_ok & itl_ok
    samples = tuple(PoolSample(*s) for s in engine.samples)
    return SimResult(
        mode=cfg.mode.value,
        trace_name=engine.trace.name,
        ttft_s=ttft,
        itl_s=np.where(np.isnan(finish), np.nan, itl),
        finish_s=finish,
        drop_reasons=reasons,
        itl_p50_token_ms=engine.itl_tokens.quantile(0.5) * 1000.0,
        itl_p99_token_ms=engine.itl_tokens.quantile(0.99) * 1000.0,
        gpu_s={p: engine.stats[p].gpu_s for p in cfg.pools},
        samples=samples,
        ttft_slo_ms=cfg.ttft_slo_ms,
        itl_slo_ms=cfg.itl_slo_ms,
        scale_actions=engine.scale_actions,
        sim_end_s=engine.now_s,
        sim_wall_s=wall_s,
        met_slo=met,
        feasible=feasibility(cfg.perf, engine.trace, cfg.ttft_slo_ms, cfg.itl_slo_ms, cfg.max_model_len or 0).feasible,
    )
