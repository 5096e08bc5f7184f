"""Compare two ``pdscale bench --json`` files row by row (same scenarios, policies and seeds expected).

    python bench/compare_grid.py before.json after.json

Prints every field that differs, wall-clock fields aside, and exits 1 when any does: the check that a
refactoring left the benchmark's figures unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _rows(path: str) -> dict[tuple[str, str], dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = data["rows"] if isinstance(data, dict) else data
    return {(str(r.get("scenario")), str(r["policy"])): r for r in rows}


def main(argv: list[str]) -> int:
    """Entry point: ``compare_grid.py A.json B.json``."""
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    a, b = (_rows(p) for p in argv)
    diffs = 0
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            print(f"{key}: only in {'the second' if key not in a else 'the first'} file")
            diffs += 1
            continue
        for field in sorted(set(a[key]) | set(b[key])):
            if "wall" in field:
                continue
            if a[key].get(field) != b[key].get(field):
                print(f"{key} {field}: {a[key].get(field)!r} -> {b[key].get(field)!r}")
                diffs += 1
    print(f"{len(a)} rows vs {len(b)} rows; {diffs} differences (wall-clock fields ignored)")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
