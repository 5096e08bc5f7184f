"""Resident memory of `pdscale serve` with the embedded simulator, without Ray.

    python bench/daemon_rss.py --ticks 60

Starts the daemon as a subprocess on examples/simulator.yaml, waits for N ticks (scale_decision log lines / 2),
reads VmRSS and VmHWM from /proc/PID/status (and of the fit worker process, when one runs), checks Ray was
not imported, then stops it with SIGTERM.
Target: RSS < 250 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _fit_workers(parent: int) -> list[int]:
    """Child processes of ``parent`` running ``pdscale.forecasting.fit_worker``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmdline = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"pdscale.forecasting.fit_worker" in cmdline:
            out.append(int(d.name))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--config", default=str(ROOT / "examples" / "simulator.yaml"))
    parser.add_argument("--speedup", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        cfg = Path(tmp) / "c.yaml"
        cfg.write_text(Path(args.config).read_text().replace("speedup: 60", f"speedup: {args.speedup:g}"))
        cmd = [sys.executable, "-m", "pdscale.controller.cli.main", "--log-format", "json", "serve",
               "--config", str(cfg),
               "--state", str(Path(tmp) / "s.db"),
               "--admin-listen", "127.0.0.1:0", "--telemetry-listen", "127.0.0.1:0"]  # fmt: skip
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                deadline = time.monotonic() + 600
                while log.read_text().count("scale_decision") < 2 * args.ticks:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print(log.read_text()[-2000:])
                        return 1
                    time.sleep(0.2)
                st = _status(proc.pid)
                maps = Path(f"/proc/{proc.pid}/maps").read_text()
                workers = [_status(pid) for pid in _fit_workers(proc.pid)]
            finally:
                proc.send_signal(signal.SIGTERM)
                rc = proc.wait(timeout=60)
    ray = "ray/" in maps and "_raylet" in maps
    print(f"daemon RSS after {args.ticks} ticks: VmRSS={st['VmRSS']} VmHWM={st['VmHWM']} ray_loaded={ray} exit={rc}")
    for w in workers:
        print(f"fit worker process (forecasting.fits=process): VmRSS={w['VmRSS']} VmHWM={w['VmHWM']}")
    if not workers:
        print("no fit worker process running (no fit was due yet, or forecasting.fits is not process)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
