"""A scale-down the actuator carried out only in part (the rest deferred, e.g. a pod became ready while others
drained) is pdscale's own write: the next tick neither holds the pool as changed by another owner nor stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pdscale.controller.core.protocols import DrainResult
from pdscale.controller.core.types import ReplicaInfo, ReplicaState, Signals
from pdscale.controller.daemon import Daemon
from pdscale.testing import StaticMetricsSource
from tests.helpers.crash_daemon import two_pool_settings


class DeferringActuator:
    """Lowers a target by at most one replica per call and reports the rest as deferred, as the kubernetes
    actuator does when it cannot drain enough pods yet."""

    def __init__(self) -> None:
        self.targets = {"prefill": 4, "decode": 1}
        self.calls: list[tuple[str, int]] = []
        self._result: dict[str, DrainResult] = {}

    def target_size(self, pool: str) -> int:
        return self.targets[pool]

    def replicas(self, pool: str) -> list[ReplicaInfo]:
        return [ReplicaInfo(id=f"{pool}-{i}", pool=pool, state=ReplicaState.READY) for i in range(self.targets[pool])]

    def set_target(self, pool: str, replicas: int) -> None:
        self.calls.append((pool, replicas))
        write = max(replicas, self.targets[pool] - 1)
        self._result[pool] = DrainResult(pool=pool, drained=(f"{pool}-x",), deferred=write - replicas)
        self.targets[pool] = write

    def take_drain_result(self, pool: str) -> DrainResult | None:
        return self._result.pop(pool, None)


def _daemon(db: Path, act: DeferringActuator) -> Daemon:
    settings: Any = two_pool_settings(
        str(db),
        {"prefill": 2, "decode": 1},
        "deferred-shrink",
        guards={"hold_while_starting": False, "scale_down_window_s": 0, "max_step_down": 8},
    )
    busy = Signals(prompt_tokens_per_s=1000.0, request_rate_per_s=1.0, running_requests=10.0, waiting_requests=0.0)
    return Daemon(settings, source=StaticMetricsSource.ok({"prefill": busy, "decode": busy}), actuator=act)


def test_deferred_part_of_a_shrink_is_finished_not_held(tmp_path: Path) -> None:
    """4 -> 2 carried out as 4 -> 3 (1 deferred): the next tick asks for 2 again instead of holding the pool."""
    act = DeferringActuator()
    d = _daemon(tmp_path / "state.db", act)
    d.rec.run_once(1000.0)
    assert act.targets["prefill"] == 3
    d.rec.run_once(1030.0)
    assert d.rec.external_hold == set(), "pdscale's own partial scale-down was taken for another owner's"
    assert act.targets["prefill"] == 2
    assert act.calls == [("prefill", 2), ("prefill", 2)]
    d.store.close()
