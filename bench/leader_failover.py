"""Leader failovers: two daemon processes elect a leader over a Lease on the emulated API server; each round
the leader is killed with SIGKILL (or, with ``--partition``, cut off from the Lease while its scale calls still
get through) and a fresh standby is started for the next round.

    python bench/leader_failover.py --failovers 10
    python bench/leader_failover.py --failovers 5 --partition
    python bench/leader_failover.py --failovers 3 --lease-s 15 --renew-s 10 --retry-s 2   # client-go defaults

Per round: the time from the kill (or cut) to the new leader's acquisition of the Lease and to its first scale
write, as the API server saw them. Double actuations: scale writes made by a daemon that was not the Lease's
holder at that moment, counted from the API server's log of writes (the actuator side).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.leader_cluster import LeaderCluster, Timings, leader_cluster


def _round(c: LeaderCluster, leader: str, standby: str, partition: bool) -> dict[str, Any]:
    c.wait(lambda: '"leader_standby"' in c.log(standby), what=f"{standby} standing by")
    if partition:
        c.emu.partition(leader, scope="leases")
        cut_at = c.wait(lambda: True)
    else:
        cut_at = c.kill(leader)
    c.wait(lambda: c.holder() == standby, what=f"{standby} taking the lease")
    written_at = c.wait(lambda: c.wrote_scale(standby, cut_at), what=f"{standby} scaling")
    acquired_at = min(t for t, client, holder, _ in list(c.emu.lease_writes) if client == standby and holder == standby)
    if partition:
        c.kill(leader)  # a partitioned leader keeps running; end it so two daemons run in the next round
    return {
        "killed": leader,
        "new_leader": standby,
        "takeover_s": round(acquired_at - cut_at, 3),
        "first_write_s": round(written_at - cut_at, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--partition", action="store_true", help="cut the leader off the Lease instead of killing it")
    parser.add_argument("--lease-s", type=float, default=1.0)
    parser.add_argument("--renew-s", type=float, default=0.7)
    parser.add_argument("--retry-s", type=float, default=0.2)
    parser.add_argument("--tick-s", type=float, default=0.1)
    parser.add_argument("--json", help="write the figures as JSON to PATH ('-' for stdout)")
    args = parser.parse_args()
    timings = Timings(lease_s=args.lease_s, renew_s=args.renew_s, retry_s=args.retry_s, tick_s=args.tick_s)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, leader_cluster(Path(tmp), timings) as c:
        c.start("d0")
        c.wait(lambda: c.holder() == "d0" and c.wrote_scale("d0"), what="d0 leading")
        leader, standby = "d0", "d1"
        c.start(standby)
        for i in range(args.failovers):
            rounds.append(_round(c, leader, standby, args.partition))
            print(f"failover {i + 1}: {rounds[-1]}", flush=True)
            leader, standby = standby, f"d{i + 2}"
            c.start(standby)
        writes = len(c.emu.scale_writes)
        double = c.emu.writes_by_non_leader()
        transitions = int(((c.emu.lease("pdscale") or {}).get("spec") or {}).get("leaseTransitions") or 0)
    takeover = [r["takeover_s"] for r in rounds]
    first = [r["first_write_s"] for r in rounds]
    summary = {
        "mode": "partition" if args.partition else "kill -9",
        "timings_s": {
            "lease": args.lease_s,
            "renew_deadline": args.renew_s,
            "retry": args.retry_s,
            "tick": args.tick_s,
        },
        "failovers": len(rounds),
        "lease_transitions": transitions,
        "scale_writes": writes,
        "double_actuations": len(double),
        "takeover_s": {"median": round(statistics.median(takeover), 3), "max": max(takeover)} if takeover else {},
        "first_write_s": {"median": round(statistics.median(first), 3), "max": max(first)} if first else {},
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        text = json.dumps({"summary": summary, "rounds": rounds}, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if not double else 1


if __name__ == "__main__":
    raise SystemExit(main())
