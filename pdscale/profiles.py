"""Measured step-time profiles: the file formats, the one reader, and the one interpolation rule.

The controller's capacity model (``pdscale.controller.core.capacity.Profile``) and the simulator's
``ProfilePerfModel`` both read profiles through this module, so one file gives one step time at one point in
both (``tests/test_profiles.py`` checks it on CSV and JSON files).

Files:

- JSON, format ``pdscale-profile/v1``: the replica's facts (``tp``, ``gpus_per_replica``, ``kv_bytes_per_token``,
  ``max_kv_tokens``, optional ``model`` and ``dtype``) and two lists, ``prefill`` of
  ``{prompt_tokens, batch, time_ms}`` and ``decode`` of ``{batch, context_tokens, time_ms}`` (context tokens per
  sequence).
- CSV of one's own measurements, header ``phase,prompt_tokens,batch,context_tokens,time_ms`` (columns in any
  order; ``phase`` is ``prefill`` or ``decode``); the replica's facts come from the caller (settings).

Repeated points are averaged. Interpolation, per phase: one curve per measured batch size over the inner axis
(prompt tokens for prefill, context tokens per sequence for decode), piecewise linear, flat below its first
point, linear with its last segment's slope above its last (never decreasing; a one-point curve is flat).
Between measured batch sizes, linear; below the smallest, that curve; above the largest, linear with the last
pair's slope (never decreasing). With a single measured batch size ``b0``, batch ``b`` is read on that curve at
the same total tokens per step, inner ``x * b / b0``: prefill compute grows with the prompt tokens in the batch,
and a decode step reads the weights once plus every sequence's KV cache, so its time follows the total context
it reads (scaling the time by ``b / b0`` would charge each sequence for reading the weights again).
"""

from __future__ import annotations

import bisect
import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CSV_HEADER",
    "PROFILE_FACTS",
    "PROFILE_FORMAT",
    "DecodePoint",
    "PrefillPoint",
    "ProfileData",
    "ProfileError",
    "StepTimes",
    "parse_profile_json",
    "read_profile",
    "read_profile_csv",
    "read_profile_json",
]

PROFILE_FORMAT = "pdscale-profile/v1"
CSV_HEADER = ("phase", "prompt_tokens", "batch", "context_tokens", "time_ms")
PROFILE_FACTS = ("kv_bytes_per_token", "max_kv_tokens", "gpus_per_replica")
"""The replica's facts a CSV profile does not carry."""


class ProfileError(ValueError):
    """A profile cannot be read or is invalid; the message names the file, line or entry, and the field."""


@dataclass(frozen=True, slots=True)
class PrefillPoint:
    """Measured time to prefill ``batch`` prompts of ``prompt_tokens`` each, together."""

    prompt_tokens: int
    batch: int
    time_ms: float


@dataclass(frozen=True, slots=True)
class DecodePoint:
    """Measured time of one decode step of ``batch`` sequences holding ``context_tokens`` each."""

    batch: int
    context_tokens: int
    time_ms: float


def _interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise linear; flat below the first point, linear (non-decreasing) extrapolation above the last."""
    if len(xs) == 1 or x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return ys[-1] + slope * (x - xs[-1])
    i = bisect.bisect_right(xs, x)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True, slots=True)
class _Table:
    """time(batch, x) as one averaged curve over x per measured batch size."""

    batches: tuple[float, ...]
    curves: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]

    @staticmethod
    def build(points: Iterable[tuple[int, int, float]]) -> _Table:
        by_batch: dict[int, dict[int, list[float]]] = {}
        for batch, x, t in points:
            by_batch.setdefault(batch, {}).setdefault(x, []).append(t)
        batches = sorted(by_batch)
        curves = []
        for b in batches:
            xs = sorted(by_batch[b])
            curves.append((tuple(float(x) for x in xs), tuple(sum(by_batch[b][x]) / len(by_batch[b][x]) for x in xs)))
        return _Table(batches=tuple(float(b) for b in batches), curves=tuple(curves))

    def at(self, batch: float, x: float) -> float:
        bs = self.batches
        if len(bs) == 1:
            return max(0.0, _interp(*self.curves[0], x * batch / bs[0]))
        if batch <= bs[0]:
            return max(0.0, _interp(*self.curves[0], x))
        i = bisect.bisect_right(bs, batch)
        i = min(max(i, 1), len(bs) - 1)  # the bracketing pair, or the last pair to extrapolate
        lo, hi = _interp(*self.curves[i - 1], x), _interp(*self.curves[i], x)
        return max(0.0, _interp((bs[i - 1], bs[i]), (lo, hi), batch))


@dataclass(frozen=True, slots=True)
class StepTimes:
    """The interpolated step times of one replica (the rule in the module docstring)."""

    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]
    _prefill: _Table = field(init=False, repr=False, compare=False)
    _decode: _Table = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.prefill or not self.decode:
            raise ProfileError("a profile needs at least one prefill and one decode measurement")
        for p in self.prefill:
            if p.prompt_tokens < 1 or p.batch < 1 or not (math.isfinite(p.time_ms) and p.time_ms > 0):
                raise ProfileError(f"prefill point {p}: prompt_tokens, batch and time_ms must be positive")
        for d in self.decode:
            if d.batch < 1 or d.context_tokens < 0 or not (math.isfinite(d.time_ms) and d.time_ms > 0):
                raise ProfileError(f"decode point {d}: batch and time_ms must be positive, context_tokens >= 0")
        object.__setattr__(self, "_prefill", _Table.build((p.batch, p.prompt_tokens, p.time_ms) for p in self.prefill))
        object.__setattr__(self, "_decode", _Table.build((d.batch, d.context_tokens, d.time_ms) for d in self.decode))

    def prefill_ms(self, prompt_tokens: float, batch: float = 1.0) -> float:
        """Time to prefill ``batch`` prompts of ``prompt_tokens`` each, together."""
        return self._prefill.at(batch, prompt_tokens)

    def decode_step_ms(self, batch: float, context_tokens: float) -> float:
        """One decode step of ``batch`` sequences holding ``context_tokens`` each."""
        return self._decode.at(batch, context_tokens)


@dataclass(frozen=True, slots=True)
class ProfileData:
    """A profile as read: the replica's facts and the measured points."""

    model: str
    tp: int
    dtype: str
    gpus_per_replica: int
    kv_bytes_per_token: int
    max_kv_tokens: int
    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]

    def step_times(self) -> StepTimes:
        """The interpolated step times of these points."""
        return StepTimes(self.prefill, self.decode)

    def to_json(self) -> dict[str, Any]:
        """The ``pdscale-profile/v1`` JSON object."""
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "tp": self.tp,
            "dtype": self.dtype,
            "gpus_per_replica": self.gpus_per_replica,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "max_kv_tokens": self.max_kv_tokens,
            "prefill": [
                {"prompt_tokens": p.prompt_tokens, "batch": p.batch, "time_ms": p.time_ms} for p in self.prefill
            ],
            "decode": [
                {"batch": d.batch, "context_tokens": d.context_tokens, "time_ms": d.time_ms} for d in self.decode
            ],
        }


def _num(where: str, name: str, value: Any, *, integer: bool = False, minimum: float = 0.0) -> float:
    """``value`` as a finite number >= ``minimum`` (whole when ``integer``); errors name ``where`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ProfileError(f"{where}: field {name!r} must be a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ProfileError(f"{where}: field {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(out) or out < minimum:
        raise ProfileError(f"{where}: field {name!r} must be a finite number >= {minimum:g}, got {value!r}")
    if integer and out != int(out):
        raise ProfileError(f"{where}: field {name!r} must be a whole number, got {value!r}")
    return out


def _facts(where: str, facts: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in ("tp", *PROFILE_FACTS):
        if key not in facts:
            raise ProfileError(f"{where}: missing field {key!r}")
        out[key] = int(_num(where, key, facts[key], integer=True, minimum=1.0))
    return out


def _data(where: str, facts: Mapping[str, Any], prefill: list[PrefillPoint], decode: list[DecodePoint]) -> ProfileData:
    for phase, points in (("prefill", prefill), ("decode", decode)):
        if not points:
            raise ProfileError(f"{where}: no {phase} measurements; a profile needs both phases")
    nums = _facts(where, facts)
    data = ProfileData(
        model=str(facts.get("model", "")),
        tp=nums["tp"],
        dtype=str(facts.get("dtype", "bf16")),
        gpus_per_replica=nums["gpus_per_replica"],
        kv_bytes_per_token=nums["kv_bytes_per_token"],
        max_kv_tokens=nums["max_kv_tokens"],
        prefill=tuple(prefill),
        decode=tuple(decode),
    )
    try:
        data.step_times()
    except ProfileError as exc:
        raise ProfileError(f"{where}: {exc}") from None
    return data


def parse_profile_json(data: Any, where: str = "<profile>") -> ProfileData:
    """A profile from its ``pdscale-profile/v1`` JSON object; errors name ``where`` and the field."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: top level must be a JSON object")
    if data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"{where}: field 'format' must be {PROFILE_FORMAT!r}, got {data.get('format')!r}")
    prefill: list[PrefillPoint] = []
    decode: list[DecodePoint] = []
    for section in ("prefill", "decode"):
        rows = data.get(section)
        if not isinstance(rows, list) or not rows:
            raise ProfileError(f"{where}: field {section!r} must be a non-empty list")
        for i, row in enumerate(rows):
            at = f"{where}: {section}[{i}]"
            if not isinstance(row, dict):
                raise ProfileError(f"{at}: must be an object")
            try:
                batch = int(_num(at, "batch", row["batch"], integer=True, minimum=1.0))
                time_ms = _num(at, "time_ms", row["time_ms"], minimum=1e-12)
                if section == "prefill":
                    tokens = int(_num(at, "prompt_tokens", row["prompt_tokens"], integer=True, minimum=1.0))
                    prefill.append(PrefillPoint(prompt_tokens=tokens, batch=batch, time_ms=time_ms))
                else:
                    ctx = int(_num(at, "context_tokens", row["context_tokens"], integer=True))
                    decode.append(DecodePoint(batch=batch, context_tokens=ctx, time_ms=time_ms))
            except KeyError as exc:
                raise ProfileError(f"{at}: missing field {exc.args[0]!r}") from None
    return _data(where, data, prefill, decode)


def read_profile_json(path: str | Path) -> ProfileData:
    """Read a ``pdscale-profile/v1`` JSON file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read profile: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{p}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{p}: not a UTF-8 text file") from None
    return parse_profile_json(data, str(p))


def read_profile_csv(path: str | Path, facts: Mapping[str, Any]) -> ProfileData:
    """Read a CSV of measurements (``CSV_HEADER`` columns); ``facts`` holds ``PROFILE_FACTS`` (and optionally
    ``model``, ``tp``, ``dtype``), which a CSV does not carry."""
    p = Path(path)
    missing = [k for k in PROFILE_FACTS if k not in facts]
    if missing:
        raise ProfileError(f"{p}: a CSV profile needs {', '.join(missing)} (the replica's facts are not in the CSV)")
    prefill: list[PrefillPoint] = []
    decode: list[DecodePoint] = []
    try:
        with p.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            names = [n.strip() for n in (reader.fieldnames or [])]
            if not names:
                raise ProfileError(f"{p}: empty file; expected header {','.join(CSV_HEADER)}")
            reader.fieldnames = names
            absent = [c for c in CSV_HEADER if c not in names]
            if absent:
                raise ProfileError(
                    f"{p}:1: missing column(s) {', '.join(absent)}; header must be {','.join(CSV_HEADER)}"
                )
            for row in reader:
                where = f"{p}:{reader.line_num}"
                if all(not (v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue
                extra = row.pop(None, None)  # type: ignore[call-overload]
                got = len(names) + len(extra or []) - sum(v is None for v in row.values())
                if got != len(names):
                    raise ProfileError(f"{where}: expected {len(names)} fields, got {got}")
                phase = (row["phase"] or "").strip().lower()
                time_ms = _num(where, "time_ms", (row["time_ms"] or "").strip(), minimum=1e-12)
                batch = int(_num(where, "batch", (row["batch"] or "").strip(), integer=True, minimum=1.0))
                if phase == "prefill":
                    raw = (row["prompt_tokens"] or "").strip()
                    tokens = int(_num(where, "prompt_tokens", raw, integer=True, minimum=1.0))
                    prefill.append(PrefillPoint(prompt_tokens=tokens, batch=batch, time_ms=time_ms))
                elif phase == "decode":
                    ctx = int(_num(where, "context_tokens", (row["context_tokens"] or "").strip(), integer=True))
                    decode.append(DecodePoint(batch=batch, context_tokens=ctx, time_ms=time_ms))
                else:
                    raise ProfileError(f"{where}: phase must be 'prefill' or 'decode', got {row['phase']!r}")
    except OSError as exc:
        raise ProfileError(f"{p}: cannot read profile: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{p}: not a UTF-8 text file") from None
    all_facts = {"model": f"profile:{p.stem}", "dtype": "measured", **facts}
    all_facts.setdefault("tp", facts["gpus_per_replica"])
    return _data(str(p), all_facts, prefill, decode)


def read_profile(path: str | Path, facts: Mapping[str, Any] | None = None) -> ProfileData:
    """Read a profile file: ``.csv`` as measurements (``facts`` required), anything else as JSON."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return read_profile_csv(p, facts or {})
    return read_profile_json(p)
