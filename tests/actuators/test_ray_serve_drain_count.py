"""Counting a Ray Serve scale-down from the replica states and Ray's metrics, without a Ray head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pdscale.actuators.ray_serve import RayServeParams, RayServePoolAddress
from pdscale.actuators.ray_serve_drain import replica_inflight, watch_scale_down

ADDR = RayServePoolAddress(application="app", deployment="Hold")


def sample(replica: str, n: float) -> str:
    return (
        f'ray_serve_replica_processing_queries{{Component="core_worker",application="app",deployment="Hold",'
        f'replica="{replica}"}} {n}\n'
    )


class Resp:
    def __init__(self, text: str) -> None:
        self.text, self.status_code = text, 200


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class FakeRay:
    """Replica states per poll (the last repeats) and each replica's in-flight count in Ray's metrics."""

    def __init__(self, polls: Sequence[Sequence[tuple[str, str]]], inflight: dict[str, float]) -> None:
        self.params = RayServeParams(metrics_url="http://$node_ip:8080/metrics", stop_poll_s=0.5)
        self.polls, self.inflight, self.i = list(polls), inflight, 0
        self._session = self

    def _status(self, pool: str) -> tuple[dict[str, Any], dict[str, Any], RayServePoolAddress]:
        states = self.polls[min(self.i, len(self.polls) - 1)]
        self.i += 1
        reps = [{"replica_id": rid, "state": st, "node_ip": "10.0.0.1"} for rid, st in states]
        return {}, {"deployments": {"Hold": {"replicas": reps}}}, ADDR

    def get(self, url: str, timeout: float) -> Resp:
        assert url == "http://10.0.0.1:8080/metrics"
        return Resp("".join(sample(r, n) for r, n in self.inflight.items()))


def test_parser_sums_only_the_replicas_samples() -> None:
    """replica_inflight reads the one replica's gauge and ignores others (nan when absent)."""
    text = "# TYPE ray_serve_replica_processing_queries gauge\n" + sample("a", 5.0) + sample("b", 1.0)
    assert replica_inflight(text, "a") == 5.0
    assert math.isnan(replica_inflight(text, "c"))


def test_replica_stopping_until_the_timeout_with_requests_is_cut() -> None:
    """A replica STOPPING for the whole graceful timeout, 3 in flight, is reported cut with 3."""
    running = ("a", "RUNNING")
    polls = [[running, ("b", "STOPPING")]] * 5 + [[running]]  # 5 polls of 0.5 s: 2.5 s >= the 2 s timeout
    ray, clock = FakeRay(polls, {"b": 3.0}), Clock()
    res = watch_scale_down(ray, "p", ADDR, 2.0, {"a", "b"}, 1, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert (res.timed_out, res.cut_inflight, res.drained) == (("b",), 3, ())
    assert res.summary() == "drain_timeout; 3 in-flight requests cut on b"


def test_replica_leaving_before_the_timeout_drained() -> None:
    """A replica that left STOPPING after 0.5 s of a 2 s timeout drained; nothing is cut."""
    polls = [[("a", "RUNNING"), ("b", "STOPPING")], [("a", "RUNNING")]]
    ray, clock = FakeRay(polls, {"b": 0.0}), Clock()
    res = watch_scale_down(ray, "p", ADDR, 2.0, {"a", "b"}, 1, clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]
    assert (res.timed_out, res.cut_inflight, res.drained) == ((), 0, ("b",))
