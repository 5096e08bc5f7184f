"""Profiles: step-time tables a controller reads instead of simulator internals, and models built from them.

Two file formats:
- JSON profile (`pdscale-profile/v1`), written by `export_profile` from any performance model: prefill time on a
  grid of prompt length x batch, decode step time on a grid of batch x context per sequence, plus the memory
  figures (KV bytes per token, max KV tokens).
- CSV profile a user measured on their own hardware: `phase,prompt_tokens,batch,context_tokens,time_ms`;
  `prefill` rows give prompt_tokens, batch and time_ms; `decode` rows give batch, context_tokens (per sequence)
  and time_ms. Repeated points are averaged.

Both load into a `ProfilePerfModel` with the methods of `pdscale.simulator.perf.PerfModel`, interpolating the table:
piecewise linear along the inner axis (prompt length, context per sequence) and along batch, linear
extrapolation past the largest measured point, clamped at the smallest.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "DECODE_BATCHES",
    "DECODE_CONTEXTS",
    "PREFILL_BATCHES",
    "PREFILL_PROMPTS",
    "PROFILE_FORMAT",
    "ProfileError",
    "ProfilePerfModel",
    "StepTable",
    "export_profile",
    "load_profile",
    "load_profile_csv",
    "profile_dict",
]

PROFILE_FORMAT = "pdscale-profile/v1"

PREFILL_PROMPTS = tuple(sorted({round(32 * 2 ** (k / 2)) for k in range(21)}))
"""Prompt lengths of an exported profile: 32 to 32768 tokens in half-octave steps."""
PREFILL_BATCHES = (1, 2, 4, 8, 16)
DECODE_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Batch sizes of an exported decode table: 1 to 512 in half-octave steps."""
DECODE_CONTEXTS = tuple(128 * 2**k for k in range(9))
"""Context tokens per sequence of an exported decode table: 128 to 32768."""


class ProfileError(ValueError):
    """A profile file is malformed; the message names the file and the line or entry."""


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
class StepTable:
    """Times (ms) on rows keyed by batch; each row is a sorted curve over an inner axis (tokens)."""

    batches: tuple[float, ...]
    xs: tuple[tuple[float, ...], ...]
    times_ms: tuple[tuple[float, ...], ...]

    @classmethod
    def from_points(cls, points: Mapping[tuple[float, float], float]) -> StepTable:
        """Build from {(batch, x): time_ms}."""
        rows: dict[float, list[tuple[float, float]]] = defaultdict(list)
        for (batch, x), t in points.items():
            rows[batch].append((x, t))
        batches = tuple(sorted(rows))
        xs = tuple(tuple(x for x, _ in sorted(rows[b])) for b in batches)
        ts = tuple(tuple(t for _, t in sorted(rows[b])) for b in batches)
        return cls(batches, xs, ts)

    def _row(self, i: int, x: float) -> float:
        xs, ts = self.xs[i], self.times_ms[i]
        if x <= xs[0] or len(xs) == 1:
            return ts[0] if x <= xs[0] else ts[0] * x / xs[0]
        j = bisect.bisect_left(xs, x)
        if j >= len(xs):
            slope = max(0.0, (ts[-1] - ts[-2]) / (xs[-1] - xs[-2]))
            return ts[-1] + slope * (x - xs[-1])
        x0, x1 = xs[j - 1], xs[j]
        return ts[j - 1] + (ts[j] - ts[j - 1]) * (x - x0) / (x1 - x0)

    def __call__(self, batch: float, x: float) -> float:
        """Interpolated time at (batch, x)."""
        bs = self.batches
        if batch <= bs[0]:
            return self._row(0, x)
        j = bisect.bisect_left(bs, batch)
        if j >= len(bs):
            last = self._row(len(bs) - 1, x)
            if len(bs) == 1:
                return last * batch / bs[0]
            prev = self._row(len(bs) - 2, x)
            slope = max(0.0, (last - prev) / (bs[-1] - bs[-2]))
            return last + slope * (batch - bs[-1])
        lo, hi = self._row(j - 1, x), self._row(j, x)
        return lo + (hi - lo) * (batch - bs[j - 1]) / (bs[j] - bs[j - 1])


@dataclass(frozen=True, slots=True)
class ProfilePerfModel:
    """A performance model that interpolates measured or exported step times (same methods as PerfModel)."""

    model: str
    tp: int
    dtype: str
    gpus_per_replica: int
    kv_bytes_per_token: int
    max_kv_tokens: int
    prefill_table: StepTable
    decode_table: StepTable
    slowdown: float = 1.0

    def prefill_ms(self, total_tokens: float, attn_sq_tokens: float, num_seqs: int) -> float:
        """Prefill time of a batch, read at the uniform batch with the same tokens and attention cost."""
        if total_tokens <= 0.0:
            return 0.0
        prompt = attn_sq_tokens / total_tokens if attn_sq_tokens > 0.0 else total_tokens / max(num_seqs, 1)
        batch = total_tokens / prompt
        return self.prefill_table(batch, prompt) * self.slowdown

    def prefill_uniform_ms(self, prompt_tokens: int, batch: int) -> float:
        """Time to prefill `batch` prompts of `prompt_tokens` each, together."""
        return self.prefill_ms(float(prompt_tokens * batch), float(prompt_tokens) ** 2 * batch, batch)

    def decode_step_ms(self, batch: int, context_tokens: float) -> float:
        """One decode iteration of `batch` sequences reading `context_tokens` KV tokens in all."""
        if batch <= 0:
            return 0.0
        return self.decode_table(float(batch), context_tokens / batch) * self.slowdown

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


def _positive(value: Any, where: str, field: str, *, integer: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: {field} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ProfileError(f"{where}: {field} must be positive, got {value!r}")
    if integer and number != int(number):
        raise ProfileError(f"{where}: {field} must be a whole number, got {value!r}")
    return number


def _average(points: Iterable[tuple[tuple[float, float], float]]) -> dict[tuple[float, float], float]:
    sums: dict[tuple[float, float], list[float]] = defaultdict(list)
    for key, t in points:
        sums[key].append(t)
    return {key: sum(ts) / len(ts) for key, ts in sums.items()}


def load_profile_csv(
    csv_path: str | Path,
    *,
    kv_bytes_per_token: int,
    max_kv_tokens: int,
    gpus_per_replica: int,
    model: str | None = None,
) -> ProfilePerfModel:
    """A model from a measured CSV profile (`phase,prompt_tokens,batch,context_tokens,time_ms`)."""
    path = Path(csv_path)
    prefill: list[tuple[tuple[float, float], float]] = []
    decode: list[tuple[tuple[float, float], float]] = []
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        expected = ["phase", "prompt_tokens", "batch", "context_tokens", "time_ms"]
        if header is None:
            raise ProfileError(f"{path}: empty file; expected header {','.join(expected)}")
        if [h.strip() for h in header] != expected:
            raise ProfileError(f"{path}:1: header must be {','.join(expected)}, got {','.join(header)}")
        for rec in reader:
            where = f"{path}:{reader.line_num}"
            if not rec or all(not f.strip() for f in rec):
                continue
            if len(rec) != len(expected):
                raise ProfileError(f"{where}: expected {len(expected)} fields, got {len(rec)}")
            phase, prompt, batch, context, time_ms = (f.strip() for f in rec)
            t = _positive(time_ms, where, "time_ms", integer=False)
            b = _positive(batch, where, "batch", integer=True)
            if phase == "prefill":
                prefill.append(((b, _positive(prompt, where, "prompt_tokens", integer=True)), t))
            elif phase == "decode":
                decode.append(((b, _positive(context, where, "context_tokens", integer=True)), t))
            else:
                raise ProfileError(f"{where}: phase must be 'prefill' or 'decode', got {phase!r}")
    if not prefill or not decode:
        missing = "prefill" if not prefill else "decode"
        raise ProfileError(f"{path}: no {missing} rows; a profile needs both phases")
    for name, value in (
        ("kv_bytes_per_token", kv_bytes_per_token),
        ("max_kv_tokens", max_kv_tokens),
        ("gpus_per_replica", gpus_per_replica),
    ):
        if value <= 0:
            raise ProfileError(f"{name} must be positive, got {value!r}")
    return ProfilePerfModel(
        model=model if model is not None else f"profile:{path.stem}",
        tp=gpus_per_replica,
        dtype="measured",
        gpus_per_replica=gpus_per_replica,
        kv_bytes_per_token=kv_bytes_per_token,
        max_kv_tokens=max_kv_tokens,
        prefill_table=StepTable.from_points(_average(prefill)),
        decode_table=StepTable.from_points(_average(decode)),
    )


def load_profile(path: str | Path) -> ProfilePerfModel:
    """A model from a JSON profile written by `export_profile` (or by hand in the same format)."""
    src = Path(path)
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{src}: cannot read profile: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{src}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{src}: format must be {PROFILE_FORMAT!r}")
    fields: dict[str, int] = {}
    for key in ("tp", "gpus_per_replica", "kv_bytes_per_token", "max_kv_tokens"):
        fields[key] = int(_positive(data.get(key), str(src), key, integer=True))
    tables: dict[str, dict[tuple[float, float], float]] = {}
    for phase, inner in (("prefill", "prompt_tokens"), ("decode", "context_tokens")):
        entries = data.get(phase)
        if not isinstance(entries, list) or not entries:
            raise ProfileError(f"{src}: {phase} must be a non-empty list")
        points: list[tuple[tuple[float, float], float]] = []
        for i, entry in enumerate(entries):
            where = f"{src}: {phase}[{i}]"
            if not isinstance(entry, dict):
                raise ProfileError(f"{where}: must be an object")
            b = _positive(entry.get("batch"), where, "batch", integer=True)
            x = _positive(entry.get(inner), where, inner, integer=True)
            points.append(((b, x), _positive(entry.get("time_ms"), where, "time_ms", integer=False)))
        tables[phase] = _average(points)
    return ProfilePerfModel(
        model=str(data.get("model", src.stem)),
        tp=fields["tp"],
        dtype=str(data.get("dtype", "measured")),
        gpus_per_replica=fields["gpus_per_replica"],
        kv_bytes_per_token=fields["kv_bytes_per_token"],
        max_kv_tokens=fields["max_kv_tokens"],
        prefill_table=StepTable.from_points(tables["prefill"]),
        decode_table=StepTable.from_points(tables["decode"]),
    )
