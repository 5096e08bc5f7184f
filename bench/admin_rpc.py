"""Admin RPC latency at a paced request rate on loopback: GetStatus and a mutating call (SetOverride).

    python bench/admin_rpc.py --rate 200 --seconds 10

Prints p50/p99/max in milliseconds per method. Target: p99 < 5 ms at 200 requests/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from tests.controller.test_admin_api import AUTH, TOKEN, Harness, _settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    os.environ["PDSCALE_TEST_ADMIN_TOKEN"] = TOKEN
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(_settings(), Path(tmp))
        h.tick()
        lat: dict[str, list[float]] = {"GetStatus": [], "SetOverride": []}
        with grpc.insecure_channel(f"127.0.0.1:{h.server.port}") as ch:
            stub = pb_grpc.AdminServiceStub(ch)
            stub.GetStatus(pb.GetStatusRequest())  # warm up the channel
            period = 1.0 / args.rate
            n = int(args.rate * args.seconds)
            start = time.perf_counter()
            for i in range(n):
                target = start + i * period
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.perf_counter()
                if i % 2 == 0:
                    stub.GetStatus(pb.GetStatusRequest())
                    lat["GetStatus"].append(time.perf_counter() - t0)
                else:
                    req = pb.SetOverrideRequest(pool="decode", mode=pb.OVERRIDE_MODE_MIN, replicas=1 + i % 4)
                    stub.SetOverride(req, metadata=AUTH)
                    lat["SetOverride"].append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
        h.close()
    print(f"admin RPC bench: {n} calls in {elapsed:.1f} s ({n / elapsed:.0f} req/s achieved, {args.rate:.0f} asked)")
    for method, xs in lat.items():
        xs_ms = sorted(x * 1000 for x in xs)
        p99 = xs_ms[min(len(xs_ms) - 1, int(0.99 * len(xs_ms)))]
        p50 = statistics.median(xs_ms)
        print(f"  {method:<12} n={len(xs_ms)} p50={p50:.2f} ms p99={p99:.2f} ms max={xs_ms[-1]:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
