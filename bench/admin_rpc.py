"""Admin RPC latency at a paced request rate on loopback: GetStatus and a mutating call (SetOverride).

    python bench/admin_rpc.py --rate 200 --seconds 10            # admin server over fakes, no loop running
    python bench/admin_rpc.py --loop --rate 200 --seconds 20     # a real `pdscale serve` with its loop ticking

``--loop`` starts ``pdscale serve`` in its own process from ``--config`` (default: examples/simulator.yaml, the
simulator as metrics source and actuator, the ensemble forecaster, one tick every tick_s / speedup = 0.5 s of
wall time), waits for its first tick, then measures from this process while the loop keeps ticking.

Prints p50/p99/max in milliseconds per method and the ticks the daemon ran meanwhile. Target: p99 < 10 ms at 200
requests/s with the loop running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from tests.controller.test_admin_api import AUTH, TOKEN, Harness, _settings

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _fake_server(tmp: Path) -> Iterator[tuple[str, str]]:
    """The admin server over a Reconciler with fakes; nothing ticks while measuring."""
    os.environ["PDSCALE_TEST_ADMIN_TOKEN"] = TOKEN
    h = Harness(_settings(), tmp)
    h.tick()
    try:
        yield f"127.0.0.1:{h.server.port}", "decode"
    finally:
        h.close()


@contextlib.contextmanager
def _daemon(tmp: Path, config: Path, notes: list[str]) -> Iterator[tuple[str, str]]:
    """``pdscale serve`` in its own process with its loop ticking; yields once its first tick is done."""
    settings = yaml.safe_load(config.read_text())
    address = f"127.0.0.1:{_free_port()}"
    settings["admin"] = {"listen": address, "token": {"env": "PDSCALE_ADMIN_TOKEN"}}
    metrics = f"127.0.0.1:{_free_port()}"
    settings["telemetry"] = {"listen": metrics}
    settings["state"] = {"path": str(tmp / "state.db")}
    path = tmp / "pdscale.yaml"
    path.write_text(yaml.safe_dump(settings))
    log = (tmp / "serve.log").open("w")
    cmd = [sys.executable, "-m", "pdscale.controller.cli.main", "--log-format", "json", "serve", "--config", str(path)]
    env = {**os.environ, "PDSCALE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        with grpc.insecure_channel(address) as ch:
            stub = pb_grpc.AdminServiceStub(ch)
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"pdscale serve did not start; see {tmp / 'serve.log'}")
                with contextlib.suppress(grpc.RpcError):
                    if stub.GetStatus(pb.GetStatusRequest(), timeout=1).ticks > 0:
                        break
                time.sleep(0.2)
        yield address, settings["pools"][-1]["name"]
        notes.append(_tick_time(metrics))
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def _tick_time(metrics: str) -> str:
    """The daemon's own tick wall time (pdscale_tick_duration_seconds) over its whole run."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("pdscale_tick_duration_seconds_sum", "pdscale_tick_duration_seconds_count"))
    }
    n = values.get("pdscale_tick_duration_seconds_count", 0.0)
    mean_ms = 1000 * values.get("pdscale_tick_duration_seconds_sum", 0.0) / max(n, 1.0)
    return f"  daemon: {n:.0f} ticks in all, mean tick wall time {mean_ms:.1f} ms"


def _ticks(stub: pb_grpc.AdminServiceStub) -> int:
    return int(stub.GetStatus(pb.GetStatusRequest(), timeout=5).ticks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loop", action="store_true", help="measure a real `pdscale serve` with its loop ticking")
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "simulator.yaml")
    args = parser.parse_args()
    lat: dict[str, list[float]] = {"GetStatus": [], "SetOverride": []}
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = _daemon(Path(tmp), args.config, notes) if args.loop else _fake_server(Path(tmp))
        with server as (address, pool), grpc.insecure_channel(address) as ch:
            stub = pb_grpc.AdminServiceStub(ch)
            stub.GetStatus(pb.GetStatusRequest())  # warm up the channel
            ticks_before = _ticks(stub)
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
                    req = pb.SetOverrideRequest(pool=pool, mode=pb.OVERRIDE_MODE_MIN, replicas=1 + i % 4)
                    stub.SetOverride(req, metadata=AUTH)
                    lat["SetOverride"].append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - start
            ticks = _ticks(stub) - ticks_before
    mode = f"loop running ({ticks} ticks meanwhile)" if args.loop else "no loop"
    rates = f"{n / elapsed:.0f} req/s achieved, {args.rate:.0f} asked"
    print(f"admin RPC bench, {mode}: {n} calls in {elapsed:.1f} s ({rates})")
    for method, xs in lat.items():
        xs_ms = sorted(x * 1000 for x in xs)
        p99 = xs_ms[min(len(xs_ms) - 1, int(0.99 * len(xs_ms)))]
        p50 = statistics.median(xs_ms)
        print(f"  {method:<12} n={len(xs_ms)} p50={p50:.2f} ms p99={p99:.2f} ms max={xs_ms[-1]:.2f} ms")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
