"""Credentials in decision reasons, observation reasons and actuator errors never reach the state DB's bytes."""

from __future__ import annotations

from pathlib import Path

from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.protocols import ActuationError, PolicyContext, Proposal
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signals
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.store import SqliteStore
from pdscale.testing import FakeActuator, StaticMetricsSource

PASSWORD = "hunter2-in-the-url"
BEARER = "abcdefgh12345678-bearer"
URL = f"http://pdscale:{PASSWORD}@prometheus.example:9090/api/v1/query"
POOLS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, gpus_per_replica=1, min_replicas=1, max_replicas=8),
    "decode": PoolSpec("decode", PoolRole.DECODE, gpus_per_replica=1, min_replicas=1, max_replicas=8),
}
SIGNALS = Signals(prompt_tokens_per_s=100.0, request_rate_per_s=1.0, running_requests=1.0)


class QuotingPolicy:
    """Grows prefill to 3 and quotes the metrics URL (with its password) and a bearer header in its reasons."""

    name = "quoting"

    def decide(self, ctx: PolicyContext) -> Proposal:
        why = f"read {URL} with Authorization: Bearer {BEARER}"
        return Proposal(targets={"prefill": 3, "decode": 2}, reasons=dict.fromkeys(ctx.pools, why))


class LeakyActuator(FakeActuator):
    """Fails every prefill write with an error that quotes the URL."""

    def set_target(self, pool: str, replicas: int) -> None:
        if pool == "prefill":
            raise ActuationError(f"PATCH {URL} failed: 503")
        super().set_target(pool, replicas)


def _db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_state_db_bytes_hold_no_credentials(tmp_path: Path) -> None:
    """After ticks whose reasons, inputs and actuation errors quote credentials, the DB files do not contain them."""
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    source = StaticMetricsSource.ok({"prefill": SIGNALS, "decode": SIGNALS})
    source.set_missing("decode", f"query {URL} timed out")
    rec = Reconciler(
        pools=POOLS,
        source=source,
        actuator=LeakyActuator({"prefill": 2, "decode": 2}),
        policy=QuotingPolicy(),
        slo=SLO(1000, 50),
        tick_s=30.0,
        guard_settings=GuardSettings(max_step_up=8, max_step_down=8, scale_down_window_s=0.0),
        recorder=store,
    )
    for i in range(1, 4):
        rec.run_once(30.0 * i)
    stored = store.recent(10)
    store.close()
    data = _db_bytes(path)
    assert stored[0].decision.pools["prefill"].reason  # the reasons were stored, masked
    assert b"prometheus.example" in data
    assert PASSWORD.encode() not in data
    assert BEARER.encode() not in data
