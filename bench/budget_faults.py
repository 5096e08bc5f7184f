"""The GPU budget under faults: random action sequences against the Reconciler, GPUs counted by the actuator.

    python bench/budget_faults.py --sequences 10000

Each sequence (tests/helpers/budget_faults.py): two pools with random sizes and GPUs per replica, a budget
drawn between 30 % and 150 % of the starting spend (and redrawn mid-run), a random policy proposing scale-ups,
scale-downs, flips and rebalances, and faults: failing reads, 409 Conflicts, writes that time out after being
applied, flips stopped half-way, daemon restarts. GPUs held are counted from the in-memory cluster's own ledger
after every write; an overshoot is a write that leaves more GPUs held than the budget and than before it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from tests.helpers.budget_faults import run_sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    started = time.perf_counter()
    writes, bad = 0, []
    for seed in range(args.first_seed, args.first_seed + args.sequences):
        r = run_sequence(seed, args.ticks)
        writes += r.writes
        if r.overshoots:
            bad.append({"seed": seed, "first": r.overshoots[0], "count": len(r.overshoots)})
    figures = {
        "sequences": args.sequences,
        "ticks_per_sequence": args.ticks,
        "writes": writes,
        "sequences_with_overshoot": len(bad),
        "wall_s": round(time.perf_counter() - started, 1),
        "examples": bad[:5],
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
