"""Small synthetic performance profiles for capacity and policy tests (no simulator needed)."""

from __future__ import annotations

from pdscale.controller.core.capacity import DecodePoint, PrefillPoint, Profile

__all__ = ["decode_ms", "prefill_ms", "small_profile"]


def prefill_ms(prompt_tokens: int, batch: int) -> float:
    """Linear in total tokens: 20 ms overhead + 0.1 ms per token."""
    return 20.0 + 0.1 * prompt_tokens * batch


def decode_ms(batch: int, context_tokens: int) -> float:
    """20 ms + 0.3 ms per sequence + 20 us per KV token read."""
    return 20.0 + 0.3 * batch + 2e-5 * batch * context_tokens


def small_profile(gpus_per_replica: int = 1, max_kv_tokens: int = 400_000) -> Profile:
    """A profile sampled from the linear models above on a coarse grid."""
    prefill = tuple(
        PrefillPoint(n, b, prefill_ms(n, b)) for n in (128, 512, 1024, 2048, 4096, 8192) for b in (1, 2, 4, 8, 16)
    )
    decode = tuple(
        DecodePoint(b, c, decode_ms(b, c)) for b in (1, 8, 32, 64, 128, 256) for c in (0, 512, 1024, 2048, 4096)
    )
    return Profile(
        model="test-model",
        tp=gpus_per_replica,
        dtype="bf16",
        gpus_per_replica=gpus_per_replica,
        kv_bytes_per_token=1000,
        max_kv_tokens=max_kv_tokens,
        prefill=prefill,
        decode=decode,
    )
