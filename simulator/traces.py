"""Request traces (arrival time, prompt tokens, output tokens) and request-rate curves.

`load_trace` reads three formats, told apart by header or extension:
- pdscale CSV: `arrival_s,input_tokens,output_tokens` (arrival times kept as given, in seconds);
- Azure LLM inference trace CSV: `TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps such as
  `2023-11-16 18:15:46.6805900`, turned into seconds from the first request;
- Mooncake JSONL (`.jsonl`, or a first line that is a JSON object): `timestamp` in ms, `input_length`,
  `output_length`, turned into seconds from the first request.
Token counts must be whole numbers >= 1. Rows out of time order are sorted (stable) and a warning is logged:
merged traces are legitimately unsorted, and the simulator needs arrival order. An empty trace is an error.

`bundled_trace("azure-conv" | "azure-code" | "mooncake-conv")` and `load_rate_curve("servegen-14d")` read the data
shipped in `simulator/data/traces` (see ATTRIBUTION.md there); `load_trace("bundled:azure-conv")` works too.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

__all__ = [
    "BUNDLED_RATE_CURVES",
    "BUNDLED_TRACES",
    "MAX_TRACE_ROWS",
    "MAX_TRACE_SPAN_S",
    "RateCurve",
    "Trace",
    "TraceError",
    "bundled_rate_curve",
    "bundled_trace",
    "load_rate_curve",
    "load_trace",
]

log = structlog.get_logger(__name__)

BUNDLED_TRACES = {
    "azure-conv": "azure2023_conv.csv",
    "azure-code": "azure2023_code.csv",
    "mooncake-conv": "mooncake_conv.csv",
}
"""Shipped one-hour traces: the Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA 2024) and Mooncake's
FAST'25 multi-turn conversation trace (Qin et al.; long prompts that resend earlier turns)."""
BUNDLED_RATE_CURVES = {"servegen-14d": "servegen_m_large_rate_14d.csv"}
"""Shipped request-rate curve: 14 days in 10-minute windows from alibaba/ServeGen."""
BUNDLED_PREFIX = "bundled:"

NATIVE_HEADER = ("arrival_s", "input_tokens", "output_tokens")
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
RATE_HEADER = ("window_start_s", "requests_per_s")


class TraceError(ValueError):
    """A trace or rate curve is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests as columns sorted by arrival: arrival_s (float64), input_tokens and output_tokens (int64)."""

    arrival_s: npt.NDArray[np.float64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    name: str

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.input_tokens) != n or len(self.output_tokens) != n:
            raise TraceError(f"{self.name}: columns differ in length")
        if n > 1 and bool(np.any(np.diff(self.arrival_s) < 0)):
            raise TraceError(f"{self.name}: arrival_s must be sorted")

    def __len__(self) -> int:
        return len(self.arrival_s)

    def duration_s(self) -> float:
        """Time from the first to the last arrival (0 for fewer than two requests)."""
        if len(self.arrival_s) < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    def slice(self, start_s: float, end_s: float) -> Trace:
        """Requests arriving in [start_s, end_s), times unchanged."""
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        return Trace(
            self.arrival_s[lo:hi],
            self.input_tokens[lo:hi],
            self.output_tokens[lo:hi],
            f"{self.name}[{start_s}:{end_s}]",
        )

    def mean_rate_per_s(self) -> float:
        """Requests per second over the trace's span (0 when it has no span)."""
        span = self.duration_s()
        return len(self) / span if span > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RateCurve:
    """Mean request rate per fixed-length window, read as a piecewise-linear rate through window centres.

    The curve repeats with period `duration_s`, so a synthesis may start anywhere and run past its end.
    """

    window_start_s: npt.NDArray[np.float64]
    requests_per_s: npt.NDArray[np.float64]
    window_s: float
    name: str

    @property
    def duration_s(self) -> float:
        """Length of the curve: last window start plus one window."""
        return float(self.window_start_s[-1] - self.window_start_s[0] + self.window_s)

    def mean_rate_per_s(self) -> float:
        """Mean of the window rates (equal windows), which is also the mean of the interpolated rate."""
        return float(np.mean(self.requests_per_s))

    def rate_at(self, t_s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Interpolated rate at curve times `t_s` (periodic)."""
        centres = self.window_start_s - self.window_start_s[0] + self.window_s / 2.0
        out: npt.NDArray[np.float64] = np.interp(
            np.asarray(t_s, dtype=np.float64), centres, self.requests_per_s, period=self.duration_s
        )
        return out


def _data_dir() -> Path:
    return Path(str(resources.files("pdscale.simulator") / "data" / "traces"))


def _sorted_trace(
    arrival: npt.NDArray[np.float64], inp: npt.NDArray[np.int64], out: npt.NDArray[np.int64], name: str, path: Path
) -> Trace:
    if arrival.size == 0:
        raise TraceError(f"{path}: no requests (empty trace)")
    span = float(arrival.max() - min(0.0, float(arrival.min())))
    if span > MAX_TRACE_SPAN_S:
        i = int(np.argmax(arrival))
        raise TraceError(f"{path}: request {i + 1} arrives {span:.0f} s in, beyond {MAX_TRACE_SPAN_S:.0f} s (366 days)")
    steps = np.diff(arrival)
    if bool(np.any(steps < 0)):
        order = np.argsort(arrival, kind="stable")
        log.warning("trace_rows_sorted", path=str(path), rows_out_of_order=int(np.count_nonzero(steps < 0)))
        arrival, inp, out = arrival[order], inp[order], out[order]
    return Trace(arrival, inp, out, name)


def _tokens(text: str, where: str, field: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TraceError(f"{where}: {field} must be a whole number, got {text!r}") from None
    if value < 1:
        raise TraceError(f"{where}: {field} must be >= 1, got {value}")
    return value


MAX_TRACE_ROWS = 2_000_000
"""Requests a trace file may hold: the loader keeps every row in memory before the replay (a 10 M-row CSV took
17.5 s and 2 GB); slice or sample a longer trace. A longer file is refused before any row is parsed
(``_refuse_long``); ``python bench/trace_load.py`` prints load time and peak memory at and over the limit."""
MAX_TRACE_SPAN_S = 366 * 86_400.0
"""Latest arrival (seconds, from 0 or from the first request): a replay runs to its last arrival, so one stray
arrival at 1e12 s would never finish."""


def _seconds(text: str, where: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {field} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise TraceError(f"{where}: {field} must be finite, got {text!r}")
    return value


def _arrival(text: str, where: str) -> float:
    value = _seconds(text, where, "arrival_s")
    if value < 0:
        raise TraceError(f"{where}: arrival_s must be >= 0, got {text!r}")
    if value > MAX_TRACE_SPAN_S:
        raise TraceError(f"{where}: arrival_s {text} is beyond {MAX_TRACE_SPAN_S:.0f} s (366 days); fix the row")
    return value


def _refuse_long(path: Path, header_lines: int) -> int:
    """Refuse a file with more than MAX_TRACE_ROWS requests before parsing any: its non-blank lines are counted
    as bytes, streaming, and counting stops at the first line over the limit (each request is one line).
    Returns the number of requests."""
    limit = MAX_TRACE_ROWS + header_lines
    rows = 0
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if raw.isspace():
                continue
            rows += 1
            if rows > limit:
                raise TraceError(f"{path}:{line}: more than {MAX_TRACE_ROWS:,} requests; slice or sample the trace")
    return max(0, rows - header_lines)


_NATIVE_ROW = np.dtype([("arrival_s", np.float64), ("input_tokens", np.int64), ("output_tokens", np.int64)])


def _load_native_fast(path: Path) -> Trace | None:
    """A pdscale CSV parsed by numpy in one pass (strict: whole numbers for tokens, no comments, no quotes); None
    when any row is not plainly valid, so that the row-by-row reader finds and names it."""
    try:
        rows = np.loadtxt(
            path, delimiter=",", skiprows=1, dtype=_NATIVE_ROW, comments=None, ndmin=1, encoding="utf-8-sig"
        )
    except (ValueError, OverflowError):
        return None
    arrival, inp, out = rows["arrival_s"].copy(), rows["input_tokens"].copy(), rows["output_tokens"].copy()
    valid = np.isfinite(arrival) & (arrival >= 0) & (arrival <= MAX_TRACE_SPAN_S) & (inp >= 1) & (out >= 1)
    if not bool(valid.all()):
        return None
    return _sorted_trace(arrival, inp, out, path.stem, path)


def _read_csv(path: Path, header: tuple[str, ...], reader: Any) -> tuple[list[str], list[int], list[int], list[int]]:
    """Raw first column, validated token columns and line numbers of a three-column CSV body."""
    times: list[str] = []
    inputs: list[int] = []
    outputs: list[int] = []
    lines: list[int] = []
    for rec in reader:
        line = reader.line_num
        if not rec or all(not f.strip() for f in rec):
            continue
        where = f"{path}:{line}"
        if len(times) >= MAX_TRACE_ROWS:
            raise TraceError(f"{where}: more than {MAX_TRACE_ROWS:,} requests; slice or sample the trace")
        if len(rec) != 3:
            raise TraceError(f"{where}: expected 3 fields ({','.join(header)}), got {len(rec)}")
        times.append(rec[0].strip())
        inputs.append(_tokens(rec[1].strip(), where, header[1]))
        outputs.append(_tokens(rec[2].strip(), where, header[2]))
        lines.append(line)
    return times, inputs, outputs, lines


def _parse_azure_times(path: Path, texts: list[str], lines: list[int]) -> npt.NDArray[np.float64]:
    try:
        stamps = np.array(texts, dtype="datetime64[ns]")
    except ValueError:
        for text, line in zip(texts, lines, strict=True):
            try:
                np.datetime64(text, "ns")
            except ValueError:
                raise TraceError(f"{path}:{line}: TIMESTAMP is not a date and time: {text!r}") from None
        raise
    if bool(np.any(np.isnat(stamps))):
        line = lines[int(np.argmax(np.isnat(stamps)))]
        raise TraceError(f"{path}:{line}: TIMESTAMP is empty")
    ns = (stamps - stamps.min()).astype(np.int64)
    seconds: npt.NDArray[np.float64] = ns.astype(np.float64) / 1e9
    return seconds


def _load_csv(path: Path) -> Trace:
    requests = _refuse_long(path, header_lines=1)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        first = next(reader, None)
        if first is None:
            raise TraceError(f"{path}: empty file")
        header = tuple(h.strip() for h in first)
        if header not in (NATIVE_HEADER, AZURE_HEADER):
            raise TraceError(
                f"{path}:1: unknown trace header {','.join(header)!r}; expected {','.join(NATIVE_HEADER)} "
                f"or {','.join(AZURE_HEADER)} (Azure), or Mooncake JSONL"
            )
        fast = _load_native_fast(path) if header == NATIVE_HEADER and requests else None
        if fast is not None:
            return fast
        times, inputs, outputs, lines = _read_csv(path, header, reader)
    if header == NATIVE_HEADER:
        arrival = np.array(
            [_arrival(t, f"{path}:{line}") for t, line in zip(times, lines, strict=True)],
            dtype=np.float64,
        )
    else:
        arrival = _parse_azure_times(path, times, lines) if times else np.zeros(0)
    return _sorted_trace(arrival, np.array(inputs, dtype=np.int64), np.array(outputs, dtype=np.int64), path.stem, path)


def _load_jsonl(path: Path) -> Trace:
    _refuse_long(path, header_lines=0)
    stamps: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            where = f"{path}:{line}"
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(rec, dict):
                raise TraceError(f"{where}: each line must be a JSON object")
            for key in ("timestamp", "input_length", "output_length"):
                if key not in rec:
                    raise TraceError(f"{where}: missing {key!r}")
            ts = rec["timestamp"]
            if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
                raise TraceError(f"{where}: timestamp must be a number of milliseconds, got {ts!r}")
            for key in ("input_length", "output_length"):
                if isinstance(rec[key], bool) or not isinstance(rec[key], int):
                    raise TraceError(f"{where}: {key} must be a whole number, got {rec[key]!r}")
                if rec[key] < 1:
                    raise TraceError(f"{where}: {key} must be >= 1, got {rec[key]}")
            stamps.append(float(ts))
            inputs.append(rec["input_length"])
            outputs.append(rec["output_length"])
    arrival = np.array(stamps, dtype=np.float64)
    if arrival.size:
        arrival = (arrival - arrival.min()) / 1e3
    return _sorted_trace(arrival, np.array(inputs, dtype=np.int64), np.array(outputs, dtype=np.int64), path.stem, path)


def load_trace(path: str | Path) -> Trace:
    """Read a trace file (pdscale CSV, Azure CSV or Mooncake JSONL) or a bundled trace ("bundled:azure-conv")."""
    text = str(path)
    if text.startswith(BUNDLED_PREFIX):
        return bundled_trace(text[len(BUNDLED_PREFIX) :])
    src = Path(path)
    if not src.is_file():
        raise TraceError(f"{src}: no such trace file")
    with src.open(encoding="utf-8-sig") as fh:
        first = fh.readline().strip()
    if not first:
        raise TraceError(f"{src}: empty file")
    if src.suffix == ".jsonl" or first.startswith("{"):
        return _load_jsonl(src)
    return _load_csv(src)


def bundled_trace(name: str) -> Trace:
    """A trace shipped with pdscale: "azure-conv", "azure-code" or "mooncake-conv" (one hour each)."""
    key = name.removeprefix(BUNDLED_PREFIX)
    if key not in BUNDLED_TRACES:
        raise TraceError(f"unknown bundled trace {name!r}; available: {', '.join(sorted(BUNDLED_TRACES))}")
    trace = load_trace(_data_dir() / BUNDLED_TRACES[key])
    return Trace(trace.arrival_s, trace.input_tokens, trace.output_tokens, key)


def bundled_rate_curve(name: str) -> RateCurve:
    """A rate curve shipped with pdscale: "servegen-14d"."""
    key = name.removeprefix(BUNDLED_PREFIX)
    if key not in BUNDLED_RATE_CURVES:
        raise TraceError(f"unknown bundled rate curve {name!r}; available: {', '.join(sorted(BUNDLED_RATE_CURVES))}")
    curve = load_rate_curve(_data_dir() / BUNDLED_RATE_CURVES[key])
    return RateCurve(curve.window_start_s, curve.requests_per_s, curve.window_s, key)


def load_rate_curve(path: str | Path) -> RateCurve:
    """Read `window_start_s,requests_per_s` (equal windows, increasing starts), or a bundled curve by name."""
    text = str(path)
    if text.startswith(BUNDLED_PREFIX) or text in BUNDLED_RATE_CURVES:
        return bundled_rate_curve(text)
    src = Path(path)
    if not src.is_file():
        raise TraceError(f"{src}: no such rate curve file")
    starts: list[float] = []
    rates: list[float] = []
    with src.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        first = next(reader, None)
        if first is None:
            raise TraceError(f"{src}: empty file")
        if tuple(h.strip() for h in first) != RATE_HEADER:
            raise TraceError(f"{src}:1: header must be {','.join(RATE_HEADER)}, got {','.join(first)}")
        for rec in reader:
            if not rec or all(not f.strip() for f in rec):
                continue
            where = f"{src}:{reader.line_num}"
            if len(rec) != 2:
                raise TraceError(f"{where}: expected 2 fields, got {len(rec)}")
            start = _seconds(rec[0].strip(), where, "window_start_s")
            rate = _seconds(rec[1].strip(), where, "requests_per_s")
            if rate < 0:
                raise TraceError(f"{where}: requests_per_s must be >= 0, got {rate}")
            if starts and start <= starts[-1]:
                raise TraceError(f"{where}: window_start_s must increase, got {start} after {starts[-1]}")
            if len(starts) >= 2 and not math.isclose(start - starts[-1], starts[1] - starts[0], rel_tol=1e-6):
                raise TraceError(f"{where}: windows must have equal length ({starts[1] - starts[0]} s)")
            starts.append(start)
            rates.append(rate)
    if len(starts) < 2:
        raise TraceError(f"{src}: a rate curve needs at least 2 windows, got {len(starts)}")
    return RateCurve(np.array(starts), np.array(rates), starts[1] - starts[0], src.stem)
