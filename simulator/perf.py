"""H100 performance model of one serving replica: prefill and decode step times from a fitted roofline.

A replica is `tp` H100 SXM GPUs running one model with tensor parallelism. Times come from roofline terms
(weights and KV cache read at HBM bandwidth, matrix FLOPs at the dense peak) divided by efficiencies and
plus overheads that `pdscale.simulator.perf_fit` fits to measured H100 data (Splitwise, Llama-2-70B, TP 2/4/8).
The parameters live in `simulator/data/perf_params.json`; docs/perf-model.md gives the equations.

Every method is plain float arithmetic on precomputed coefficients, cheap enough to call millions of times.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdscale.simulator.profile import ProfilePerfModel

__all__ = [
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DTYPES",
    "HardwareSpec",
    "ModelShape",
    "PerfModel",
    "PerfModelError",
    "default_params_path",
    "known_models",
    "load_params",
    "load_perf_model",
    "load_profile_perf_model",
]

DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
"""Fraction of HBM the serving engine may use (vLLM's --gpu-memory-utilization default)."""

DTYPES = {"bf16": 2, "fp8": 1}
"""Bytes per weight and per KV-cache element for each supported dtype."""


class PerfModelError(ValueError):
    """A performance model cannot be built: unknown model or dtype, bad parameters, or the model does not fit."""


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """One GPU: memory size and the peaks the roofline divides by."""

    name: str
    hbm_bytes: float
    hbm_bytes_per_s: float
    bf16_flops_per_s: float
    fp8_flops_per_s: float
    nvlink_bytes_per_s: float

    def peak_flops_per_s(self, dtype: str) -> float:
        """Dense matrix peak for the compute dtype."""
        return self.fp8_flops_per_s if dtype == "fp8" else self.bf16_flops_per_s


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Transformer shape of a Llama-style decoder (grouped-query attention, SwiGLU MLP, untied embeddings)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_hidden: int
    vocab: int
    context_window: int = 0
    """Longest sequence (prompt + output tokens) the model accepts; 0: not stated."""

    @property
    def layer_params(self) -> int:
        """Parameters of the decoder layers: attention projections, SwiGLU MLP and the two RMSNorms."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = 3 * self.hidden * self.ffn_hidden
        return self.layers * (attn + mlp + 2 * self.hidden)

    @property
    def embedding_params(self) -> int:
        """One vocabulary table (input embedding or LM head)."""
        return self.vocab * self.hidden

    @property
    def total_params(self) -> int:
        """All parameters: layers, input embedding, LM head and final norm."""
        return self.layer_params + 2 * self.embedding_params + self.hidden

    def kv_bytes_per_token(self, dtype: str) -> int:
        """KV cache bytes one token holds: K and V, every layer, every KV head."""
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPES[dtype]

    def weight_bytes(self, dtype: str) -> int:
        """Bytes of all weights resident in GPU memory."""
        return self.total_params * DTYPES[dtype]

    def weight_read_bytes(self, dtype: str) -> int:
        """Bytes read from HBM by one forward pass: all weights except the input embedding (only rows are read)."""
        return (self.total_params - self.embedding_params) * DTYPES[dtype]

    @property
    def token_flops(self) -> float:
        """Matrix FLOPs of one token through the decoder layers (2 per multiply-accumulate)."""
        return 2.0 * self.layer_params

    @property
    def lm_head_flops(self) -> float:
        """Matrix FLOPs of the LM head for one sampled token."""
        return 2.0 * self.embedding_params

    @property
    def attn_flops_per_sq_token(self) -> float:
        """Causal attention FLOPs per squared prompt token: QK^T and AV, half of the L x L square, all layers."""
        return 2.0 * self.layers * self.heads * self.head_dim


@dataclass(frozen=True, slots=True)
class PerfModel:
    """Step times of one replica (`tp` GPUs) of `model` in `dtype`. Times in milliseconds.

    Attributes:
        model: model name, e.g. "llama-3.1-70b".
        tp: tensor-parallel degree; gpus_per_replica equals it.
        dtype: "bf16" or "fp8" (weights and KV cache).
        kv_bytes_per_token: KV cache bytes per token on the whole replica.
        max_kv_tokens: KV tokens the replica can hold after weights and activation reserve.
        prefill_*/decode_*: fitted coefficients in ms (see docs/perf-model.md).
        slowdown: product of every `scaled()` factor applied (1.0 for the calibrated model).
    """

    model: str
    tp: int
    dtype: str
    gpus_per_replica: int
    kv_bytes_per_token: int
    max_kv_tokens: int
    prefill_overhead_ms: float
    prefill_weight_read_ms: float
    prefill_ms_per_token: float
    prefill_ms_per_token_over_knee: float
    prefill_knee_tokens: float
    prefill_ms_per_sq_token: float
    prefill_ms_per_seq: float
    decode_overhead_ms: float
    decode_weight_read_ms: float
    decode_ms_per_kv_token: float
    decode_compute_ms_per_seq: float
    decode_ms_per_seq: float
    slowdown: float = 1.0
    context_window_tokens: int = 0
    """The model's context window (prompt + output); the simulated engine rejects longer requests. 0: none."""

    def prefill_ms(self, total_tokens: float, attn_sq_tokens: float, num_seqs: int) -> float:
        """Time to prefill `num_seqs` prompts together: `total_tokens` in all, `attn_sq_tokens` = sum of L_i^2."""
        if total_tokens <= 0.0:
            return 0.0
        knee = self.prefill_knee_tokens
        if total_tokens <= knee:
            compute = total_tokens * self.prefill_ms_per_token
        else:
            compute = knee * self.prefill_ms_per_token + (total_tokens - knee) * self.prefill_ms_per_token_over_knee
        compute += attn_sq_tokens * self.prefill_ms_per_sq_token + num_seqs * self.prefill_ms_per_seq
        return self.prefill_overhead_ms + max(self.prefill_weight_read_ms, compute)

    def prefill_uniform_ms(self, prompt_tokens: int, batch: int) -> float:
        """Time to prefill `batch` prompts of `prompt_tokens` each, together."""
        return self.prefill_ms(float(prompt_tokens * batch), float(prompt_tokens) ** 2 * batch, batch)

    def decode_step_ms(self, batch: int, context_tokens: float) -> float:
        """One decode iteration of `batch` sequences; `context_tokens` = total KV tokens read across the batch."""
        if batch <= 0:
            return 0.0
        memory = self.decode_weight_read_ms + context_tokens * self.decode_ms_per_kv_token
        compute = batch * self.decode_compute_ms_per_seq
        return self.decode_overhead_ms + max(memory, compute) + batch * self.decode_ms_per_seq

    def scaled(self, slowdown: float) -> PerfModel:
        """The same model with every time multiplied by `slowdown` (1.2 = hardware 20% slower)."""
        if not (math.isfinite(slowdown) and slowdown > 0.0):
            raise PerfModelError(f"slowdown must be a positive finite number, got {slowdown!r}")
        return replace(
            self,
            prefill_overhead_ms=self.prefill_overhead_ms * slowdown,
            prefill_weight_read_ms=self.prefill_weight_read_ms * slowdown,
            prefill_ms_per_token=self.prefill_ms_per_token * slowdown,
            prefill_ms_per_token_over_knee=self.prefill_ms_per_token_over_knee * slowdown,
            prefill_ms_per_sq_token=self.prefill_ms_per_sq_token * slowdown,
            prefill_ms_per_seq=self.prefill_ms_per_seq * slowdown,
            decode_overhead_ms=self.decode_overhead_ms * slowdown,
            decode_weight_read_ms=self.decode_weight_read_ms * slowdown,
            decode_ms_per_kv_token=self.decode_ms_per_kv_token * slowdown,
            decode_compute_ms_per_seq=self.decode_compute_ms_per_seq * slowdown,
            decode_ms_per_seq=self.decode_ms_per_seq * slowdown,
            slowdown=self.slowdown * slowdown,
        )


def default_params_path() -> Path:
    """The parameter file shipped with pdscale."""
    return Path(str(resources.files("pdscale.simulator") / "data" / "perf_params.json"))


def load_params(params_path: Path | None = None) -> dict[str, Any]:
    """Read a parameter file (JSON) and check its top-level sections."""
    path = params_path if params_path is not None else default_params_path()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PerfModelError(f"{path}: cannot read performance parameters: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise PerfModelError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise PerfModelError(f"{path}: top level must be a JSON object")
    for key in ("hardware", "memory", "models", "coefficients"):
        if not isinstance(data.get(key), dict):
            raise PerfModelError(f"{path}: missing or invalid section {key!r}")
    data["_path"] = str(path)
    return data


def known_models(params_path: Path | None = None) -> list[str]:
    """Names of the models the parameter file describes."""
    return sorted(load_params(params_path)["models"])


def hardware_spec(params: dict[str, Any]) -> HardwareSpec:
    """The GPU section of a parameter file."""
    hw = params["hardware"]
    try:
        return HardwareSpec(
            name=str(hw["name"]),
            hbm_bytes=float(hw["hbm_bytes"]),
            hbm_bytes_per_s=float(hw["hbm_bytes_per_s"]),
            bf16_flops_per_s=float(hw["bf16_dense_flops_per_s"]),
            fp8_flops_per_s=float(hw["fp8_dense_flops_per_s"]),
            nvlink_bytes_per_s=float(hw["nvlink_bytes_per_s"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PerfModelError(f"{params.get('_path')}: hardware: missing or invalid field {exc}") from exc


def model_shape(params: dict[str, Any], model: str) -> ModelShape:
    """The shape of `model` from a parameter file."""
    models = params["models"]
    if model not in models:
        raise PerfModelError(f"unknown model {model!r}; known models: {', '.join(sorted(models))}")
    m = models[model]
    try:
        return ModelShape(
            name=model,
            layers=int(m["layers"]),
            hidden=int(m["hidden"]),
            heads=int(m["heads"]),
            kv_heads=int(m["kv_heads"]),
            head_dim=int(m["head_dim"]),
            ffn_hidden=int(m["ffn_hidden"]),
            vocab=int(m["vocab"]),
            context_window=int(m.get("context_window", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PerfModelError(f"{params.get('_path')}: models.{model}: missing or invalid field {exc}") from exc


def coefficients_for(params: dict[str, Any], tp: int) -> tuple[dict[str, float], int]:
    """Fitted efficiencies for `tp`, and the measured TP they come from (the nearest one when `tp` was not measured)."""
    table = params["coefficients"]
    measured = sorted(int(k) for k in table)
    if not measured:
        raise PerfModelError(f"{params.get('_path')}: coefficients: no fitted tensor-parallel degree")
    source = min(measured, key=lambda m: (abs(m - tp), m))
    try:
        return {k: float(v) for k, v in table[str(source)].items()}, source
    except (TypeError, ValueError) as exc:
        raise PerfModelError(f"{params.get('_path')}: coefficients.{source}: non-numeric value") from exc


def build_perf_model(
    params: dict[str, Any],
    shape: ModelShape,
    tp: int,
    dtype: str,
    coeffs: dict[str, float],
    *,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
) -> PerfModel:
    """Turn efficiencies into per-call coefficients for one model, TP and dtype (also used by the fit)."""
    hw = hardware_spec(params)
    peak = hw.peak_flops_per_s(dtype)
    ref_layers = float(params.get("calibration", {}).get("reference_layers", shape.layers))
    layer_scale = shape.layers / ref_layers
    ms = 1e3
    knee = coeffs["prefill_knee_tokens"]
    kv_bytes = shape.kv_bytes_per_token(dtype)
    weight_read_s = shape.weight_read_bytes(dtype) / tp / hw.hbm_bytes_per_s
    return PerfModel(
        model=shape.name,
        tp=tp,
        dtype=dtype,
        gpus_per_replica=tp,
        kv_bytes_per_token=kv_bytes,
        max_kv_tokens=max_kv_tokens(params, shape, tp, dtype, gpu_memory_utilization),
        prefill_overhead_ms=coeffs["prefill_overhead_ms"] * layer_scale,
        prefill_weight_read_ms=weight_read_s / coeffs["prefill_memory_eff"] * ms,
        prefill_ms_per_token=shape.token_flops / tp / (peak * coeffs["prefill_compute_eff"]) * ms,
        prefill_ms_per_token_over_knee=shape.token_flops / tp / (peak * coeffs["prefill_compute_eff_over_knee"]) * ms,
        prefill_knee_tokens=knee,
        prefill_ms_per_sq_token=shape.attn_flops_per_sq_token / tp / (peak * coeffs["prefill_attn_eff"]) * ms,
        prefill_ms_per_seq=shape.lm_head_flops / tp / (peak * coeffs["prefill_compute_eff"]) * ms,
        decode_overhead_ms=coeffs["decode_overhead_ms"] * layer_scale,
        decode_weight_read_ms=weight_read_s / coeffs["decode_memory_eff"] * ms,
        decode_ms_per_kv_token=kv_bytes / tp / (hw.hbm_bytes_per_s * coeffs["decode_kv_eff"]) * ms,
        decode_compute_ms_per_seq=(shape.token_flops + shape.lm_head_flops)
        / tp
        / (peak * coeffs["prefill_compute_eff"])
        * ms,
        decode_ms_per_seq=coeffs["decode_ms_per_seq"] * layer_scale,
        context_window_tokens=shape.context_window,
    )


def max_kv_tokens(
    params: dict[str, Any],
    shape: ModelShape,
    tp: int,
    dtype: str,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
) -> int:
    """KV tokens a replica holds: (tp x HBM x utilisation - weights - activation reserve) / KV bytes per token."""
    hw = hardware_spec(params)
    reserve = float(params["memory"].get("activation_reserve_bytes_per_gpu", 0.0))
    usable = tp * hw.hbm_bytes * gpu_memory_utilization
    weights = shape.weight_bytes(dtype)
    free = usable - weights - tp * reserve
    if free <= 0:
        raise PerfModelError(
            f"{shape.name} {dtype} does not fit on {tp} x {hw.name}: weights {weights / 1e9:.1f} GB + activation "
            f"reserve {tp * reserve / 1e9:.1f} GB > {usable / 1e9:.1f} GB usable at gpu_memory_utilization "
            f"{gpu_memory_utilization}; use a larger tensor-parallel degree or fp8"
        )
    return int(free // shape.kv_bytes_per_token(dtype))


def load_perf_model(
    model: str = "llama-3.1-70b",
    tp: int = 4,
    dtype: str = "bf16",
    params_path: Path | None = None,
    *,
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
) -> PerfModel:
    """The calibrated model of one replica: `model` on `tp` H100s in `dtype`.

    TP degrees without measured data (TP 1) use the efficiencies of the nearest measured degree (TP 2);
    models other than the calibrated one (Llama-3.1-8B) use the same efficiencies with their own shapes,
    and overheads scaled by their layer count.
    """
    if dtype not in DTYPES:
        raise PerfModelError(f"unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    if tp not in (1, 2, 4, 8):
        raise PerfModelError(f"tensor-parallel degree must be 1, 2, 4 or 8, got {tp!r}")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise PerfModelError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    params = load_params(params_path)
    shape = model_shape(params, model)
    coeffs, _ = coefficients_for(params, tp)
    missing = sorted(set(COEFFICIENT_NAMES) - set(coeffs))
    if missing:
        raise PerfModelError(f"{params['_path']}: coefficients: missing {', '.join(missing)}")
    return build_perf_model(params, shape, tp, dtype, coeffs, gpu_memory_utilization=gpu_memory_utilization)


COEFFICIENT_NAMES = (
    "prefill_overhead_ms",
    "prefill_memory_eff",
    "prefill_compute_eff",
    "prefill_compute_eff_over_knee",
    "prefill_knee_tokens",
    "prefill_attn_eff",
    "decode_overhead_ms",
    "decode_memory_eff",
    "decode_kv_eff",
    "decode_ms_per_seq",
)
"""The fitted coefficients each tensor-parallel entry of the parameter file holds."""


def load_profile_perf_model(
    csv_path: str | Path, kv_bytes_per_token: int, max_kv_tokens: int, gpus_per_replica: int
) -> ProfilePerfModel:
    """A model that interpolates a measured profile table instead of the roofline (see pdscale.simulator.profile)."""
    from pdscale.simulator.profile import load_profile_csv  # noqa: PLC0415 - profile imports this module

    return load_profile_csv(
        csv_path,
        kv_bytes_per_token=kv_bytes_per_token,
        max_kv_tokens=max_kv_tokens,
        gpus_per_replica=gpus_per_replica,
    )
