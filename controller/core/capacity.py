"""Capacity model: replicas a pool needs for a demand at its SLO, from a measured performance profile.

Pure core: no I/O, no simulator import. A :class:`Profile` (tables of prefill and decode step times of one
replica, loaded by ``pdscale.controller.runtime.profile``) is interpolated; queueing math comes from
``pdscale.controller.core.queueing``.
See docs/capacity.md for the equations and their limits.

- Prefill: requests arrive at ``lambda`` req/s with the forecast prompt-length mix. A replica fills batches up to
  ``token_budget`` prompt tokens, so under load it serves ``k = budget // ISL`` prompts per batch time. TTFT at
  the SLO quantile = M/G/c waiting-time quantile + prefill time of a long (p90) prompt + KV transfer.
- Decode: the largest batch whose step time meets the ITL target (times ``itl_headroom``) and whose KV fits;
  replicas = concurrency / that batch.
- Colocated: decode steps of batch ``b`` carry a prefill chunk; the chunk is the largest that keeps the stalled
  step within the ITL target, prefill throughput is what those chunks carry, TTFT as for prefill.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pdscale.controller.core.protocols import CapacityEstimate
from pdscale.controller.core.queueing import erlang_c, lognormal_cv2, mgc_wait_mean_s, mgc_wait_quantile_s
from pdscale.controller.core.ttft_tail import prompt_nodes, ttft_quantile_ms
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signal
from pdscale.profiles import PROFILE_FORMAT, DecodePoint, PrefillPoint, StepTimes

__all__ = [
    "PROFILE_FORMAT",
    "CapacityParams",
    "Correction",
    "DecodePoint",
    "KvReservation",
    "PrefillPoint",
    "Profile",
    "ProfileCapacityModel",
    "Workload",
]


@dataclass(frozen=True, slots=True)
class Profile:
    """Step times of one replica, as measured (format ``pdscale-profile/v1``), interpolated by the shared rule
    of :mod:`pdscale.profiles` (the simulator reads the same file the same way)."""

    model: str
    tp: int
    dtype: str
    gpus_per_replica: int
    kv_bytes_per_token: int
    max_kv_tokens: int
    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]
    _times: StepTimes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.gpus_per_replica < 1 or self.max_kv_tokens < 1 or self.kv_bytes_per_token < 1:
            raise ValueError("profile gpus_per_replica, max_kv_tokens and kv_bytes_per_token must be >= 1")
        object.__setattr__(self, "_times", StepTimes(self.prefill, self.decode))

    def prefill_ms(self, prompt_tokens: float, batch: float = 1.0) -> float:
        """Time to prefill ``batch`` prompts of ``prompt_tokens`` together (interpolated)."""
        return self._times.prefill_ms(prompt_tokens, batch)

    def decode_step_ms(self, batch: float, context_tokens: float) -> float:
        """One decode step of ``batch`` sequences of ``context_tokens`` each (interpolated)."""
        return self._times.decode_step_ms(batch, context_tokens)


class KvReservation(StrEnum):
    """How much KV a running sequence holds for the fit check."""

    FULL = "full"
    """ISL + OSL: engines that reserve a sequence's whole KV at admission (and pdscale's simulator)."""
    AVERAGE = "average"
    """ISL + OSL/2: paged engines, on average over a sequence's life."""


@dataclass(frozen=True, slots=True)
class CapacityParams:
    """Tunables of the capacity model (``capacity.params`` in the settings file)."""

    token_budget: int = 8192
    """Prompt tokens a prefill replica batches together."""
    colocated_token_budget: int = 2048
    """Largest prefill chunk mixed into a colocated decode step."""
    max_running_seqs: int = 256
    max_utilization: float = 0.9
    """Never plan a pool above this utilisation, whatever the queueing model says."""
    arrival_cv2: float = 1.0
    """Squared coefficient of variation of inter-arrival times (1.0: Poisson)."""
    itl_headroom: float = 0.9
    """Decode batches are sized so the step time stays within this fraction of the ITL target."""
    kv_reservation: KvReservation = KvReservation.FULL
    kv_link_bytes_per_s_per_gpu: float = 50e9
    default_isl_tokens: float = 1024.0
    default_osl_tokens: float = 256.0
    ttft_over_prompt_mix: bool = False
    """True: the TTFT quantile of wait + each prompt's own prefill over the prompt-length mix (``core.ttft_tail``);
    False (default): the wait's quantile plus a p90 prompt's prefill (docs/capacity.md has both measured)."""

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.colocated_token_budget < 1 or self.max_running_seqs < 1:
            raise ValueError("capacity params: token budgets and max_running_seqs must be >= 1")
        if not 0.0 < self.max_utilization <= 1.0:
            raise ValueError(f"capacity params: max_utilization must be in (0, 1], got {self.max_utilization}")
        if not 0.0 < self.itl_headroom <= 1.0:
            raise ValueError(f"capacity params: itl_headroom must be in (0, 1], got {self.itl_headroom}")
        if self.arrival_cv2 < 0 or self.kv_link_bytes_per_s_per_gpu <= 0:
            raise ValueError("capacity params: arrival_cv2 must be >= 0 and kv_link_bytes_per_s_per_gpu > 0")


@dataclass(frozen=True, slots=True)
class Workload:
    """Request shape the pool serves: prompt length mean and p90, output length mean."""

    isl_mean_tokens: float
    osl_mean_tokens: float
    isl_p90_tokens: float | None = None
    arrival_cv2: float | None = None
    """Measured arrival variability (squared CV, 1 = Poisson); None: ``CapacityParams.arrival_cv2``."""
    isl_p99_tokens: float | None = None
    """The prompt-length p99 where the engine's histogram gives it (the TTFT tail's long prompts)."""
    prefix_cached_share: float = 0.0
    """Share of prompt tokens the engine serves from its prefix cache (vLLM ``vllm:prefix_cache_hits_total`` /
    ``vllm:prefix_cache_queries_total``): prefill computes only the rest; the KV transfer still carries the
    whole prompt."""
    decode_context_tokens: float | None = None
    """Measured KV tokens of a running sequence (KV tokens in use / running sequences); None: ISL + OSL / 2.

    The running population is length-biased: a sequence is running for as long as its output lasts, so long
    outputs are over-represented in it, and its mean context is ``ISL + E[OSL^2] / (2 E[OSL])``, not
    ``ISL + E[OSL] / 2``. On reasoning-length outputs (mean ~2.6k tokens, heavy tail) that is about twice the
    naive figure, and the decode step at a batch is read that much slower."""

    @property
    def ctx_tokens(self) -> float:
        """Mean context (KV tokens read per step) of a running sequence."""
        naive = self.isl_mean_tokens + self.osl_mean_tokens / 2.0
        return self.decode_context_tokens if self.decode_context_tokens else naive

    @property
    def reserved_tokens(self) -> float:
        """KV a running sequence has reserved when engines reserve prompt plus output at admission: ISL + OSL, or
        with a measured context ``2 x context - ISL`` (a running sequence is on average half-way through its
        output, so the outputs of the running ones average twice what they have generated)."""
        full = self.isl_mean_tokens + self.osl_mean_tokens
        if not self.decode_context_tokens:
            return full
        return max(full, 2.0 * self.decode_context_tokens - self.isl_mean_tokens)

    @property
    def uncached(self) -> float:
        """The share of each prompt prefill computes."""
        return min(1.0, max(0.0, 1.0 - self.prefix_cached_share))

    @property
    def isl_tail_tokens(self) -> float:
        """The long-prompt length the TTFT tail is sized for (p90, or 2x mean if unknown)."""
        return max(self.isl_mean_tokens, self.isl_p90_tokens or 2.0 * self.isl_mean_tokens)

    @property
    def isl_cv2(self) -> float:
        """Squared coefficient of variation of prompt length (log-normal fit to mean and p90)."""
        if self.isl_p90_tokens is None:
            return 1.0
        return lognormal_cv2(self.isl_mean_tokens, self.isl_p90_tokens)


@dataclass(frozen=True, slots=True)
class Correction:
    """Online calibration factors multiplying the profile's prefill and decode times (1.0 = as profiled)."""

    prefill: float = 1.0
    decode: float = 1.0
    prefill_at: Callable[[float], float] | None = None
    """A learned prefill shape (``core.prefill_shape``): the factor for a batch of that many prompt tokens, used
    for disaggregated prefill in place of ``prefill``; None: the one factor at every batch size."""

    def prefill_factor(self, batch_tokens: float) -> float:
        """The prefill factor for a batch of ``batch_tokens``."""
        return self.prefill if self.prefill_at is None else self.prefill_at(batch_tokens)


@dataclass(frozen=True, slots=True)
class _Prefill:
    service_rate_per_s: float
    tail_service_ms: float
    transfer_ms: float
    cv2: float


class ProfileCapacityModel:
    """A :class:`pdscale.controller.core.protocols.CapacityModel` over a :class:`Profile`."""

    def __init__(self, profile: Profile, params: CapacityParams | None = None) -> None:
        self.profile = profile
        self.params = params or CapacityParams()

    # -- building blocks ------------------------------------------------------------------------------
    def workload(self, demand: Mapping[Signal, float], hint: Workload | None = None) -> Workload:
        """The workload to size for: ``hint``, else ISL from prefill tokens / request rate, else defaults."""
        if hint is not None:
            return hint
        tps, rate = demand.get(Signal.PREFILL_TPS), demand.get(Signal.REQUEST_RATE)
        isl = tps / rate if tps and rate else self.params.default_isl_tokens
        return Workload(isl_mean_tokens=isl, osl_mean_tokens=self.params.default_osl_tokens)

    def _prefill(self, w: Workload, corr: Correction) -> _Prefill:
        p, prof = self.params, self.profile
        isl = max(1.0, w.isl_mean_tokens * w.uncached)
        per_batch = max(1.0, math.floor(p.token_budget / isl))
        if isl <= p.token_budget:
            batch_ms = prof.prefill_ms(isl, per_batch) * corr.prefill_factor(isl * per_batch)
        else:
            batch_ms = prof.prefill_ms(isl, 1.0) * corr.prefill_factor(isl)
        tail = max(1.0, w.isl_tail_tokens * w.uncached)
        tail_ms = prof.prefill_ms(tail, 1.0) * corr.prefill_factor(tail)
        link = p.kv_link_bytes_per_s_per_gpu * prof.gpus_per_replica
        transfer_ms = w.isl_tail_tokens * prof.kv_bytes_per_token / link * 1e3
        return _Prefill(per_batch / (batch_ms / 1e3), tail_ms, transfer_ms, w.isl_cv2)

    def profile_prefill_batch_ms(self, batch_tokens: float, w: Workload) -> float:
        """The profile's time for one prefill batch of ``batch_tokens`` in prompts of the mean length (a batch
        smaller than one prompt is a chunk of it; with a prefix cache, of the uncached part)."""
        isl = max(1.0, w.isl_mean_tokens * w.uncached)
        if batch_tokens <= isl:
            return self.profile.prefill_ms(max(1.0, batch_tokens), 1.0)
        return self.profile.prefill_ms(isl, batch_tokens / isl)

    def prefill_throughput_tps(self, isl_tokens: float, corr: Correction | None = None) -> float:
        """Prompt tokens/s one replica prefills when kept busy with prompts of ``isl_tokens``."""
        pf = self._prefill(Workload(isl_tokens, self.params.default_osl_tokens), corr or Correction())
        return pf.service_rate_per_s * isl_tokens

    def _kv_tokens_per_seq(self, w: Workload) -> float:
        if self.params.kv_reservation is KvReservation.FULL:
            return w.reserved_tokens
        return w.ctx_tokens

    def decode_batch(self, itl_ms: float, w: Workload, corr: Correction | None = None) -> int:
        """The largest batch a replica decodes within ``itl_ms`` x headroom whose KV fits (0 if even 1 does not)."""
        corr = corr or Correction()
        ctx_tokens = w.ctx_tokens
        kv_cap = math.floor(self.profile.max_kv_tokens / max(1.0, self._kv_tokens_per_seq(w)))
        hi = min(self.params.max_running_seqs, kv_cap)
        limit = itl_ms * self.params.itl_headroom
        lo, best = 1, 0
        while lo <= hi:  # step time grows with batch: binary search
            mid = (lo + hi) // 2
            if self.profile.decode_step_ms(mid, ctx_tokens) * corr.decode <= limit:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

    def decode_throughput_tps(self, itl_ms: float, w: Workload, corr: Correction | None = None) -> float:
        """Output tokens/s one replica generates at the ITL-constrained batch."""
        corr = corr or Correction()
        b = self.decode_batch(itl_ms, w, corr)
        if b == 0:
            return 0.0
        step = self.profile.decode_step_ms(b, w.ctx_tokens) * corr.decode
        return b / step * 1e3

    # -- predictions at a given size ------------------------------------------------------------------
    def predict_ttft_ms(
        self, replicas: int, demand: Mapping[Signal, float], slo: SLO, w: Workload, corr: Correction | None = None
    ) -> float:
        """TTFT at the SLO quantile for a prefill pool of ``replicas`` (``inf`` if overloaded).

        With ``ttft_over_prompt_mix`` (default) the quantile of wait + own prefill over the prompt-length mix,
        prompts that alone outlast the target left out (``core.ttft_tail``); else quantiles >= 0.9 add the
        service time of a p90 prompt, lower ones that of a mean prompt.
        """
        if replicas < 1:
            return math.inf
        corr = corr or Correction()
        pf = self._prefill(w, corr)
        rate = self._rate(demand, w)
        cv2 = self._arrival_cv2(w)
        if self.params.ttft_over_prompt_mix:
            slack = replicas * pf.service_rate_per_s - rate
            if rate > 0.0 and slack <= 0.0:
                return math.inf
            wait_prob = erlang_c(replicas, rate / pf.service_rate_per_s) if rate > 0.0 else 0.0
            k = max(1e-9, (cv2 + pf.cv2) / 2.0)
            link = self.params.kv_link_bytes_per_s_per_gpu * self.profile.gpus_per_replica
            kvb = self.profile.kv_bytes_per_token

            def own_ms(tokens: float) -> float:
                new = max(1.0, tokens * w.uncached)
                return self.profile.prefill_ms(new, 1.0) * corr.prefill_factor(new) + tokens * kvb / link * 1e3

            nodes = prompt_nodes(w.isl_mean_tokens, w.isl_p90_tokens, w.isl_p99_tokens)
            theta = slack / k if rate > 0.0 else math.inf
            return ttft_quantile_ms(slo.quantile, wait_prob, theta, own_ms, nodes, slo.ttft_ms)
        wait_s = mgc_wait_quantile_s(replicas, rate, pf.service_rate_per_s, slo.quantile, cv2, pf.cv2)
        service_ms = pf.tail_service_ms
        if slo.quantile < 0.9:
            new = max(1.0, w.isl_mean_tokens * w.uncached)
            service_ms = self.profile.prefill_ms(new, 1.0) * corr.prefill_factor(new)
        return wait_s * 1e3 + service_ms + pf.transfer_ms

    def predict_ttft_mean_ms(
        self, replicas: int, demand: Mapping[Signal, float], w: Workload, corr: Correction | None = None
    ) -> float:
        """Mean TTFT of a prefill pool of ``replicas``: mean M/G/c wait + a mean prompt's prefill + KV transfer."""
        if replicas < 1:
            return math.inf
        corr = corr or Correction()
        pf = self._prefill(w, corr)
        rate = self._rate(demand, w)
        wait_s = mgc_wait_mean_s(replicas, rate, pf.service_rate_per_s, self._arrival_cv2(w), pf.cv2)
        new = max(1.0, w.isl_mean_tokens * w.uncached)
        service_ms = self.profile.prefill_ms(new, 1.0) * corr.prefill_factor(new)
        link = self.params.kv_link_bytes_per_s_per_gpu * self.profile.gpus_per_replica
        return wait_s * 1e3 + service_ms + w.isl_mean_tokens * self.profile.kv_bytes_per_token / link * 1e3

    def predict_prefill_busy_share(
        self, replicas: int, demand: Mapping[Signal, float], w: Workload, corr: Correction | None = None
    ) -> float:
        """Share of time each of ``replicas`` prefill replicas computes at this load (> 1: overloaded)."""
        if replicas < 1:
            return math.inf
        pf = self._prefill(w, corr or Correction())
        return self._rate(demand, w) / (replicas * pf.service_rate_per_s)

    def predict_itl_ms(self, replicas: int, concurrency: float, w: Workload, corr: Correction | None = None) -> float:
        """Decode step time with ``concurrency`` sequences spread over ``replicas`` (``inf`` if none)."""
        if replicas < 1:
            return math.inf if concurrency > 0 else 0.0
        b = max(1.0, concurrency / replicas)
        return self.profile.decode_step_ms(b, w.ctx_tokens) * (corr or Correction()).decode

    def _arrival_cv2(self, w: Workload) -> float:
        return self.params.arrival_cv2 if w.arrival_cv2 is None else w.arrival_cv2

    @staticmethod
    def _rate(demand: Mapping[Signal, float], w: Workload) -> float:
        rate = demand.get(Signal.REQUEST_RATE)
        if rate is None:
            rate = demand.get(Signal.PREFILL_TPS, 0.0) / max(1.0, w.isl_mean_tokens)
        return max(0.0, rate)

    # -- sizing ---------------------------------------------------------------------------------------
    def replicas_needed(
        self,
        pool: PoolSpec,
        demand: Mapping[Signal, float],
        slo: SLO,
        *,
        workload: Workload | None = None,
        correction: Correction | None = None,
    ) -> CapacityEstimate:
        """Replicas ``pool`` needs for ``demand`` within ``slo`` (see the module docstring)."""
        w = self.workload(demand, workload)
        corr = correction or Correction()
        if pool.role is PoolRole.PREFILL:
            return self._size_prefill(demand, slo, w, corr)
        if pool.role is PoolRole.DECODE:
            return self._size_decode(demand, slo, w, corr)
        return self._size_colocated(demand, slo, w, corr)

    def _size_prefill(
        self, demand: Mapping[Signal, float], slo: SLO, w: Workload, corr: Correction
    ) -> CapacityEstimate:
        rate = self._rate(demand, w)
        pf = self._prefill(w, corr)
        if rate <= 0.0:
            return CapacityEstimate(
                0, predicted_ttft_ms=pf.tail_service_ms + pf.transfer_ms, utilization=0.0, reason="no prefill demand"
            )
        if pf.tail_service_ms + pf.transfer_ms > slo.ttft_ms:
            n = self._min_servers(rate, pf.service_rate_per_s)
            return CapacityEstimate(
                n,
                predicted_ttft_ms=pf.tail_service_ms + pf.transfer_ms,
                utilization=rate / (n * pf.service_rate_per_s),
                reason=f"p90 prompt ({w.isl_tail_tokens:.0f} tok) alone exceeds TTFT target",
            )
        n = self._min_servers(rate, pf.service_rate_per_s)
        while True:
            ttft = self.predict_ttft_ms(n, demand, slo, w, corr)
            if ttft <= slo.ttft_ms:
                break
            n += 1
        util = rate / (n * pf.service_rate_per_s)
        return CapacityEstimate(
            n,
            predicted_ttft_ms=ttft,
            utilization=util,
            reason=(
                f"{rate:.2f} req/s x {w.isl_mean_tokens:.0f} tok at {pf.service_rate_per_s:.2f} req/s/replica: "
                f"p{slo.quantile * 100:g} TTFT {ttft:.0f} ms at {n} replicas"
            ),
        )

    def _min_servers(self, rate: float, mu: float) -> int:
        return max(1, math.ceil(rate / (mu * self.params.max_utilization) - 1e-9))

    def _concurrency(self, demand: Mapping[Signal, float], w: Workload, slo: SLO) -> float:
        conc = demand.get(Signal.DECODE_CONCURRENCY)
        if conc is not None:
            return max(0.0, conc)
        kv = demand.get(Signal.KV_TOKENS)
        if kv is not None:
            return max(0.0, kv / max(1.0, w.ctx_tokens))
        rate = self._rate(demand, w)  # Little's law at the ITL target
        return rate * w.osl_mean_tokens * slo.itl_ms / 1e3

    def _size_decode(self, demand: Mapping[Signal, float], slo: SLO, w: Workload, corr: Correction) -> CapacityEstimate:
        conc = self._concurrency(demand, w, slo)
        b = self.decode_batch(slo.itl_ms, w, corr)
        if b == 0:
            return CapacityEstimate(
                0 if conc <= 0 else 1_000_000, reason="one sequence alone misses the ITL target or KV"
            )
        n = math.ceil(conc / b - 1e-9) if conc > 0 else 0
        itl = self.predict_itl_ms(n, conc, w, corr) if n else 0.0
        return CapacityEstimate(
            n,
            predicted_itl_ms=itl,
            utilization=(conc / (n * b)) if n else 0.0,
            reason=f"{conc:.1f} concurrent seqs / {b} per replica (ITL target {slo.itl_ms:g} ms)",
        )

    def _size_colocated(
        self, demand: Mapping[Signal, float], slo: SLO, w: Workload, corr: Correction
    ) -> CapacityEstimate:
        """Chunked prefill mixed into decode steps (Sarathi-style); the ITL target bounds the mean step, stalls
        included. The smallest size whose mean ITL and TTFT quantile both meet the targets wins."""
        conc = self._concurrency(demand, w, slo)
        rate = self._rate(demand, w)
        tps = rate * w.isl_mean_tokens
        ctx_tokens = w.ctx_tokens
        limit = slo.itl_ms * self.params.itl_headroom
        chunk = float(self.params.colocated_token_budget)
        pf = self._prefill(w, corr)
        kv_cap = self.profile.max_kv_tokens / max(1.0, self._kv_tokens_per_seq(w))
        b_cap = max(1.0, min(float(self.params.max_running_seqs), kv_cap))
        n = max(1, math.ceil(conc / b_cap - 1e-9))
        for _ in range(100_000):
            b = conc / n
            s_d = self.profile.decode_step_ms(max(1.0, b), ctx_tokens) * corr.decode if b > 0 else 0.0
            extra = self.profile.prefill_ms(chunk + b, 1.0) - self.profile.prefill_ms(b, 1.0) if b > 0 else 0.0
            s_m = s_d + max(self.profile.prefill_ms(chunk, 1.0) if b <= 0 else extra, 0.0) * corr.prefill
            r = tps / n / 1e3  # prompt tokens per ms per replica
            denom = chunk - r * (s_m - s_d)
            u = r * s_d / denom if denom > 0 else math.inf
            mu = chunk / (s_m / 1e3) / max(1.0, w.isl_mean_tokens)
            if u <= 1.0 and rate < n * mu * self.params.max_utilization:
                itl = u * s_m + (1.0 - u) * s_d
                wait_s = mgc_wait_quantile_s(n, rate, mu, slo.quantile, self._arrival_cv2(w), pf.cv2)
                ttft = wait_s * 1e3 + math.ceil(w.isl_tail_tokens / chunk) * s_m
                if itl <= limit and ttft <= slo.ttft_ms:
                    return CapacityEstimate(
                        n,
                        predicted_ttft_ms=ttft,
                        predicted_itl_ms=itl,
                        utilization=rate / (n * mu),
                        reason=(
                            f"colocated: {b:.0f} seqs/replica, {u:.0%} of steps carry a {chunk:.0f}-token chunk, "
                            f"mean ITL {itl:.0f} ms, p{slo.quantile * 100:g} TTFT {ttft:.0f} ms"
                        ),
                    )
            n += 1
        return CapacityEstimate(1_000_000, reason="colocated: no size meets both targets")
