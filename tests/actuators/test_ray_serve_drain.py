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


@pytest.fixture(scope="module")
def head() -> Iterator[tuple[Any, int]]:
    from tests.helpers.ray_cluster import deploy, free_port, ray_head, wait_running

    with ray_head() as h:
        port = free_port()
        deploy(h, port, [APP])
        wait_running(h, "hold", {"Hold": 2})
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
