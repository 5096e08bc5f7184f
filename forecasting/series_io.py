"""Reads the two CSV inputs of the forecasting CLI; every error names the file and line."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from pdscale.forecasting.grid import FloatArray

__all__ = ["SeriesFormatError", "read_series", "read_trace"]


class SeriesFormatError(ValueError):
    """A CSV input is malformed; the message names file:line and the field."""


def _read(path: Path, columns: tuple[str, ...], *, allow_missing: tuple[str, ...] = ()) -> list[list[float]]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise SeriesFormatError(f"{path}: cannot open: {exc.strerror}") from exc
    out: list[list[float]] = [[] for _ in columns]
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise SeriesFormatError(f"{path}:1: empty file, expected header {','.join(columns)}")
        names = [h.strip() for h in header]
        missing = [c for c in columns if c not in names]
        if missing:
            raise SeriesFormatError(f"{path}:1: header lacks column(s) {missing}; expected {','.join(columns)}")
        idx = [names.index(c) for c in columns]
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(names):
                raise SeriesFormatError(f"{path}:{line}: expected {len(names)} fields, got {len(row)}")
            for col, (name, i) in enumerate(zip(columns, idx, strict=True)):
                text = row[i].strip()
                if text == "" and name in allow_missing:
                    out[col].append(math.nan)
                    continue
                try:
                    v = float(text)
                except ValueError:
                    raise SeriesFormatError(f"{path}:{line}: {name}={text!r} is not a number") from None
                if math.isinf(v) or (math.isnan(v) and name not in allow_missing):
                    raise SeriesFormatError(f"{path}:{line}: {name}={text!r} must be finite")
                if name not in {"t_s", "arrival_s"} and v < 0:
                    raise SeriesFormatError(f"{path}:{line}: {name}={text!r} must be >= 0")
                out[col].append(v)
    if not out[0]:
        raise SeriesFormatError(f"{path}: no data rows")
    return out


def read_series(path: str | Path) -> tuple[FloatArray, FloatArray]:
    """``t_s,value`` CSV (value may be empty or NaN = missing); rows must be in time order."""
    p = Path(path)
    t, v = _read(p, ("t_s", "value"), allow_missing=("value",))
    ta = np.asarray(t)
    bad = np.nonzero(np.diff(ta) < 0)[0]
    if bad.size:
        raise SeriesFormatError(f"{p}:{int(bad[0]) + 3}: t_s goes backwards ({ta[bad[0] + 1]} after {ta[bad[0]]})")
    return ta, np.asarray(v)


def read_trace(path: str | Path) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``arrival_s,input_tokens,output_tokens`` CSV."""
    a, i, o = _read(Path(path), ("arrival_s", "input_tokens", "output_tokens"))
    return np.asarray(a), np.asarray(i), np.asarray(o)
