"""A daemon process for leader-election tests and the failover bench: Lease election and the kubernetes
actuator, both against the emulated API server, with a policy that changes both pools' targets every tick (so
every tick a leader makes is a scale write the emulator logs).

Run as ``python tests/helpers/leader_daemon.py IDENTITY SERVER_URL WORKDIR [--lease-s S --renew-s S --retry-s S
--tick-s S]``. It talks to ``SERVER_URL/clients/IDENTITY`` (so the emulator can partition it and log its writes),
shares ``WORKDIR/state.db`` with the other daemons, and logs JSON lines to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from pdscale.controller.core.protocols import PolicyContext, Proposal
from pdscale.controller.core.types import Signals
from pdscale.controller.daemon import Daemon
from pdscale.controller.runtime.logconfig import configure_logging
from pdscale.controller.runtime.plugins import PluginGroup, Registry
from pdscale.controller.runtime.settings import parse_settings
from pdscale.testing import StaticMetricsSource
from tests.helpers.k8s_emulator import write_kubeconfig


class AlternatePolicy:
    """Targets 2, 3, 2, 3 ... tick after tick; the count survives a takeover through the policy state."""

    name = "alternate"
    uses_forecasts = False

    def __init__(self, params: Any = None) -> None:
        del params

    def decide(self, ctx: PolicyContext) -> Proposal:
        n = int(ctx.state.get("n", 0)) + 1
        return Proposal(targets=dict.fromkeys(ctx.pools, 2 + n % 2), state={"n": n})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("identity")
    parser.add_argument("server")
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--lease-s", type=float, default=1.0)
    parser.add_argument("--renew-s", type=float, default=0.7)
    parser.add_argument("--retry-s", type=float, default=0.2)
    parser.add_argument("--tick-s", type=float, default=0.1)
    parser.add_argument("--mode", choices=("lease", "file"), default="lease")
    args = parser.parse_args()
    url = f"{args.server}/clients/{args.identity}"
    kubeconfig = write_kubeconfig(args.workdir / f"kubeconfig-{args.identity}.json", url)
    pool = {"gpus_per_replica": 1, "min_replicas": 1, "max_replicas": 8, "cold_start_s": 0}
    settings = parse_settings(
        {
            "tick_s": args.tick_s,
            "pools": [
                {"name": "prefill", "role": "prefill", **pool, "actuator": {"name": "prefill"}},
                {"name": "decode", "role": "decode", **pool, "actuator": {"name": "decode"}},
            ],
            "policy": {"name": "alternate"},
            "forecasting": {"model": "last_value", "fits": "inline"},
            "guards": {"scale_down_window_s": 0, "max_step_down": 8, "hold_while_starting": False},
            "metrics": {"source": "static"},
            "actuator": {
                "name": "kubernetes",
                "params": {"kubeconfig": str(kubeconfig), "field_manager": args.identity, "timeout_s": 1.0},
            },
            "admin": {"enabled": False},
            "telemetry": {"enabled": False},
            "state": {"path": str(args.workdir / "state.db")},
            "leader_election": {
                "mode": args.mode,
                "identity": args.identity,
                "kubeconfig": str(kubeconfig),
                "lease_duration_s": args.lease_s,
                "renew_deadline_s": args.renew_s,
                "retry_period_s": args.retry_s,
            },
            "logging": {"format": "json"},
        },
        f"leader-daemon-{args.identity}",
    )
    configure_logging("info", "json")
    registry = Registry()
    registry.register(PluginGroup.POLICIES, "alternate", AlternatePolicy)
    busy = Signals(prompt_tokens_per_s=1000.0, request_rate_per_s=1.0, running_requests=10.0, waiting_requests=0.0)
    source = StaticMetricsSource.ok({"prefill": busy, "decode": busy})
    daemon = Daemon(settings, registry=registry, source=source)
    return asyncio.run(daemon.run())


if __name__ == "__main__":
    raise SystemExit(main())
