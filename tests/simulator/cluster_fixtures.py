"""Small stand-ins for the performance model and traces used by the cluster tests."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class StandInPerf:
    """Affine H100-like perf model of a 70B tp4 replica (close enough in magnitude for behaviour tests)."""

    model: str = "llama-3.1-70b"
    tp: int = 4
    dtype: str = "bf16"
    gpus_per_replica: int = 4
    kv_bytes_per_token: int = 327_680
    max_kv_tokens: int = 400_000

    def prefill_ms(self, total_tokens: float, attn_sq_tokens: float, num_seqs: int) -> float:
        """Affine prefill time of a batch."""
        return 10.0 + 0.08 * total_tokens + 1e-6 * attn_sq_tokens + 0.0 * num_seqs

    def prefill_uniform_ms(self, prompt_tokens: int, batch: int) -> float:
        """Prefill time of `batch` prompts of equal length."""
        return self.prefill_ms(prompt_tokens * batch, float(prompt_tokens) ** 2 * batch, batch)

    def decode_step_ms(self, batch: int, context_tokens: float) -> float:
        """Affine decode step time."""
        return 15.0 + 0.1 * batch + 2e-5 * context_tokens

    def scaled(self, slowdown: float) -> StandInPerf:
        """Same shape, different speed is not needed by these tests."""
        return replace(self)


@dataclass(frozen=True, slots=True)
class StandInTrace:
    """Arrays sorted by arrival, like pdscale.simulator.traces.Trace."""

    arrival_s: npt.NDArray[np.float64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    name: str = "stand-in"


def poisson_trace(
    rate_per_s: float, duration_s: float, seed: int = 0, prompt_mean: int = 1000, output_mean: int = 200
) -> StandInTrace:
    """Poisson arrivals with geometric-ish prompt and output lengths."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate_per_s * duration_s)
    arrivals = np.sort(rng.uniform(0.0, duration_s, n))
    prompts = np.maximum(1, rng.exponential(prompt_mean, n)).astype(np.int64)
    outputs = np.maximum(1, rng.exponential(output_mean, n)).astype(np.int64)
    return StandInTrace(arrivals, prompts, outputs, f"poisson-{rate_per_s}")


def fixed_trace(arrivals: list[float], prompt: int, output: int) -> StandInTrace:
    """Requests of equal shape at the given times."""
    n = len(arrivals)
    return StandInTrace(
        np.asarray(arrivals, dtype=np.float64),
        np.full(n, prompt, dtype=np.int64),
        np.full(n, output, dtype=np.int64),
        "fixed",
    )
