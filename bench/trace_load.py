"""Trace loading at and over the row limit: load time and peak memory of a trace of MAX_TRACE_ROWS requests, and of
refusing a longer one (refused before any row is parsed: the loader counts lines, streaming, and stops at the limit).

    python bench/trace_load.py                       # 2,000,000 rows loaded, 10,000,000 refused
    python bench/trace_load.py --rows 500000 --over 1000000

Writes both CSVs (pdscale's arrival_s,input_tokens,output_tokens) in a temporary folder, then loads each in a fresh
process so its peak RSS (VmHWM, Linux) is its own. Prints, per file: rows, size, wall time of ``load_trace``, peak
RSS of the process and the RSS it had before loading (Python and pdscale imported), and what the loader said.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pdscale.simulator.traces import MAX_TRACE_ROWS  # noqa: E402

_CHUNK = 100_000
_CHILD = """
import json, sys, time
from pdscale.simulator.traces import TraceError, load_trace
def hwm_kb():  # VmHWM starts afresh at exec (ru_maxrss would carry the forking parent's peak)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
before_kb = hwm_kb()
t0 = time.perf_counter()
try:
    trace = load_trace(sys.argv[1])
    said = f"loaded {trace.arrival_s.size:,} requests"
except TraceError as exc:
    said = f"refused: {exc}"
wall = time.perf_counter() - t0
peak_kb = hwm_kb()
print(json.dumps({"wall_s": wall, "peak_mb": peak_kb / 1024, "before_mb": before_kb / 1024, "said": said}))
"""


def write_trace(path: Path, rows: int) -> None:
    """``rows`` requests, one every millisecond, with varied token counts."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("arrival_s,input_tokens,output_tokens\n")
        for start in range(0, rows, _CHUNK):
            stop = min(rows, start + _CHUNK)
            fh.write("".join(f"{i / 1000:.3f},{100 + i % 1000},{50 + i % 200}\n" for i in range(start, stop)))


def measure(path: Path) -> dict[str, object]:
    """``load_trace(path)`` in a fresh process: wall time, peak and starting RSS, the loader's answer."""
    env_path = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=MAX_TRACE_ROWS, help="rows of the trace that loads")
    parser.add_argument("--over", type=int, default=10_000_000, help="rows of the trace that is refused")
    args = parser.parse_args()
    print(f"trace load bench (MAX_TRACE_ROWS = {MAX_TRACE_ROWS:,})")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (args.rows, args.over):
            path = Path(tmp) / f"trace-{rows}.csv"
            write_trace(path, rows)
            r = measure(path)
            size_mb = path.stat().st_size / 2**20
            print(
                f"  {rows:>12,} rows ({size_mb:,.0f} MiB): {r['wall_s']:.2f} s, peak RSS {r['peak_mb']:,.0f} MiB "
                f"(before loading {r['before_mb']:,.0f} MiB); {r['said']}"
            )
            path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
