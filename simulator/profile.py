"""Profiles: step-time tables a controller reads instead of simulator internals, and models built from them.

Two file formats:
- JSON profile (`pdscale-profile/v1`), written by `export_profile` from any performance model: prefill time on a
  grid of prompt length x batch, decode step time on a grid of batch x context per sequence, plus the memory
  figures (KV bytes per token, max KV tokens).
- CSV profile a user measured on their own hardware: `phase,prompt_tokens,batch,context_tokens,time_ms`;
  `prefill` rows give prompt_tokens, batch and time_ms; `decode` rows give batch, context_tokens (per sequence)
  and time_ms. Repeated points are averaged.

Both are read by `pdscale.profiles` (the reader and interpolation rule the controller's capacity model uses
too, so one file gives one step time in both) into a `ProfilePerfModel` with the methods of
`pdscale.simulator.perf.PerfModel`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from pdscale.profiles import PROFILE_FORMAT, ProfileData, ProfileError, StepTimes, read_profile_csv, read_profile_json

__all__ = [
    "DECODE_BATCHES",
    "DECODE_CONTEXTS",
    "PREFILL_BATCHES",
    "PREFILL_PROMPTS",
    "PROFILE_FORMAT",
    "ProfileError",
    "ProfilePerfModel",
    "StepTimes",
    "export_profile",
    "load_profile",
    "load_profile_csv",
    "profile_dict",
]

PREFILL_PROMPTS = tuple(sorted({round(32 * 2 ** (k / 2)) for k in range(21)}))
"""Prompt lengths of an exported profile: 32 to 32768 tokens in half-octave steps."""
PREFILL_BATCHES = (1, 2, 4, 8, 16)
DECODE_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Batch sizes of an exported decode table: 1 to 512 in half-octave steps."""
DECODE_CONTEXTS = tuple(128 * 2**k for k in range(9))
"""Context tokens per sequence of an exported decode table: 128 to 32768."""


class _Exportable(Protocol):
    @property
    def model(self) -> str: ...
    @property
    def tp(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def gpus_per_replica(self) -> int: ...
    @property
    def kv_bytes_per_token(self) -> int: ...
    @property
    def max_kv_tokens(self) -> int: ...
    def prefill_uniform_ms(self, prompt_tokens: int, batch: int) -> float: ...
    def decode_step_ms(self, batch: int, context_tokens: float) -> float: ...


@dataclass(frozen=True, slots=True)
class ProfilePerfModel:
    """A performance model that interpolates measured or exported step times (same methods as PerfModel)."""

    model: str
    tp: int
    dtype: str
    gpus_per_replica: int
    kv_bytes_per_token: int
    max_kv_tokens: int
    times: StepTimes
    slowdown: float = 1.0

    def prefill_ms(self, total_tokens: float, attn_sq_tokens: float, num_seqs: int) -> float:
        """Prefill time of a batch, read at the uniform batch with the same tokens and attention cost."""
        if total_tokens <= 0.0:
            return 0.0
        prompt = attn_sq_tokens / total_tokens if attn_sq_tokens > 0.0 else total_tokens / max(num_seqs, 1)
        batch = total_tokens / prompt
        return self.times.prefill_ms(prompt, batch) * self.slowdown

    def prefill_uniform_ms(self, prompt_tokens: int, batch: int) -> float:
        """Time to prefill `batch` prompts of `prompt_tokens` each, together."""
        return self.prefill_ms(float(prompt_tokens * batch), float(prompt_tokens) ** 2 * batch, batch)

    def decode_step_ms(self, batch: int, context_tokens: float) -> float:
        """One decode iteration of `batch` sequences reading `context_tokens` KV tokens in all."""
        if batch <= 0:
            return 0.0
        return self.times.decode_step_ms(float(batch), context_tokens / batch) * self.slowdown

    def scaled(self, slowdown: float) -> ProfilePerfModel:
        """The same table with every time multiplied by `slowdown`."""
        if not (math.isfinite(slowdown) and slowdown > 0.0):
            raise ProfileError(f"slowdown must be a positive finite number, got {slowdown!r}")
        return replace(self, slowdown=self.slowdown * slowdown)


def profile_dict(perf: _Exportable) -> dict[str, Any]:
    """The JSON profile of `perf` as a dict (see PROFILE_FORMAT)."""
    return {
        "format": PROFILE_FORMAT,
        "model": perf.model,
        "tp": perf.tp,
        "dtype": perf.dtype,
        "gpus_per_replica": perf.gpus_per_replica,
        "kv_bytes_per_token": perf.kv_bytes_per_token,
        "max_kv_tokens": perf.max_kv_tokens,
        "prefill": [
            {"prompt_tokens": p, "batch": b, "time_ms": round(perf.prefill_uniform_ms(p, b), 4)}
            for b in PREFILL_BATCHES
            for p in PREFILL_PROMPTS
        ],
        "decode": [
            {"batch": b, "context_tokens": c, "time_ms": round(perf.decode_step_ms(b, float(b * c)), 4)}
            for b in DECODE_BATCHES
            for c in DECODE_CONTEXTS
        ],
    }


def export_profile(perf: _Exportable, path: str | Path) -> Path:
    """Write the JSON profile of `perf` to `path` and return the path."""
    out = Path(path)
    out.write_text(json.dumps(profile_dict(perf), indent=1) + "\n", encoding="utf-8")
    return out


def _perf_model(data: ProfileData) -> ProfilePerfModel:
    return ProfilePerfModel(
        model=data.model,
        tp=data.tp,
        dtype=data.dtype,
        gpus_per_replica=data.gpus_per_replica,
        kv_bytes_per_token=data.kv_bytes_per_token,
        max_kv_tokens=data.max_kv_tokens,
        times=data.step_times(),
    )


def load_profile_csv(
    csv_path: str | Path,
    *,
    kv_bytes_per_token: int,
    max_kv_tokens: int,
    gpus_per_replica: int,
    model: str | None = None,
) -> ProfilePerfModel:
    """A model from a measured CSV profile (`phase,prompt_tokens,batch,context_tokens,time_ms`)."""
    facts: dict[str, Any] = {
        "kv_bytes_per_token": kv_bytes_per_token,
        "max_kv_tokens": max_kv_tokens,
        "gpus_per_replica": gpus_per_replica,
    }
    if model is not None:
        facts["model"] = model
    return _perf_model(read_profile_csv(csv_path, facts))


def load_profile(path: str | Path) -> ProfilePerfModel:
    """A model from a JSON profile written by `export_profile` (or by hand in the same format)."""
    data = read_profile_json(path)
    return _perf_model(data if data.model else replace(data, model=Path(path).stem))
