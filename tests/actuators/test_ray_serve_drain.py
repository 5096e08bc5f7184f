"""Ray Serve scale-down on a real local Ray head: the drain bound pdscale sets lets in-flight requests finish."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from pdscale.actuators.ray_serve import RayServeActuator
from pdscale.controller.core.types import PoolRole
from pdscale.controller.runtime.plugins import PluginEnv
from pdscale.controller.runtime.settings import PoolSettings

pytestmark = [pytest.mark.integration_ray, pytest.mark.slow]

HOLD_S = 4.0
APP = {
    "name": "hold",
    "route_prefix": "/hold",
    "import_path": "tests.helpers.ray_hold_app:app",
    # The operator's own bound is shorter than a request: without pdscale's drain bound a scale-down cuts them.
    "deployments": [{"name": "Hold", "num_replicas": 2, "graceful_shutdown_timeout_s": 0.5}],
}


# Two replicas that take 5 requests each, stopped after 2 s: a scale-down while both are full cuts 5.
CUT_APP = {
    "name": "cut",
    "route_prefix": "/cut",
    "import_path": "tests.helpers.ray_hold_app:app",
    "deployments": [{"name": "Hold", "num_replicas": 2, "graceful_shutdown_timeout_s": 2.0, "max_ongoing_requests": 5}],
}
METRICS_PORT: list[int] = []


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[Any, int]]:
    from tests.helpers.ray_cluster import deploy, free_port, ray_head, wait_running

    metrics_port = free_port()
    METRICS_PORT.append(metrics_port)
    # Ray's metrics agent on a known port, reporting every 0.5 s (default 10 s) so a short test reads fresh counts.
    extra = [f"--metrics-export-port={metrics_port}", '--system-config={"metrics_report_interval_ms": 500}']
    with ray_head(extra_args=extra) as h:
        port = free_port()
        deploy(h, port, [APP, CUT_APP])
        wait_running(h, "hold", {"Hold": 2})
        wait_running(h, "cut", {"Hold": 2})
        yield h, port


def test_scale_down_loses_no_request(head: tuple[Any, int]) -> None:
    """Requests in flight when the deployment goes from 2 replicas to 1 all answer 200."""
    from tests.helpers.ray_cluster import wait_running

    h, port = head
    pool = PoolSettings(
        name="hold", role=PoolRole.DECODE, gpus_per_replica=1, max_replicas=4, drain_timeout_s=30.0,
        actuator={"application": "hold", "deployment": "Hold"},
    )  # fmt: skip
    act = RayServeActuator({"hold": pool}, {"address": h.dashboard_url, "token_file": None}, PluginEnv())
    codes: list[int] = []

    def one() -> None:
        try:
            codes.append(requests.get(f"http://127.0.0.1:{port}/hold?s={HOLD_S}", timeout=60).status_code)
        except requests.RequestException:
            codes.append(0)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # the requests reach their replicas (Serve shows no per-replica count over REST)
    act.set_target("hold", 1)
    for t in threads:
        t.join(60)
    assert codes == [200] * 6
    assert act.graceful_shutdown_s("hold") == 30.0
    wait_running(h, "hold", {"Hold": 1})


def test_drain_timeout_counts_the_requests_ray_cut(head: tuple[Any, int]) -> None:
    """A scale-down whose stopped replica still runs requests at the timeout reports how many Ray cut."""
    from pdscale.actuators.ray_serve_drain import replica_inflight

    h, port = head
    metrics = f"http://127.0.0.1:{METRICS_PORT[0]}/metrics"
    pool = PoolSettings(
        name="cut", role=PoolRole.DECODE, gpus_per_replica=1, max_replicas=4, drain_timeout_s=2.0,
        actuator={"application": "cut", "deployment": "Hold"},
    )  # fmt: skip
    params = {
        "address": h.dashboard_url,
        "token_file": None,
        "metrics_url": "http://$node_ip:" + f"{METRICS_PORT[0]}/metrics",
    }
    act = RayServeActuator({"cut": pool}, params, PluginEnv())
    codes: list[int] = []

    def one() -> None:
        try:
            codes.append(requests.get(f"http://127.0.0.1:{port}/cut?s=12", timeout=60).status_code)
        except requests.RequestException:
            codes.append(0)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    ids = [r.id for r in act.replicas("cut")]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # both replicas full (5 each), as Ray's metrics report them
        text = requests.get(metrics, timeout=5).text
        if all(replica_inflight(text, rid) == 5 for rid in ids):
            break
        time.sleep(0.25)
    act.set_target("cut", 1)
    for t in threads:
        t.join(60)
    res = act.take_drain_result("cut")
    failed = sum(1 for c in codes if c != 200)
    print(f"ray_cut: requests={len(codes)} answered_200={codes.count(200)} failed={failed} reported={res}")
    assert res is not None
    assert failed > 0, f"nothing was cut: {codes}"
    assert len(res.timed_out) == 1
    assert res.cut_inflight == failed
    assert res.summary().startswith(f"drain_timeout; {failed} in-flight requests cut on {res.timed_out[0]}")
