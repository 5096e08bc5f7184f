"""A moto server on loopback holding one GPU Auto Scaling group (p5 launch template), for the AWS tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests

from tests.helpers.ray_cluster import free_port


@contextmanager
def moto_asg(
    monkeypatch: pytest.MonkeyPatch, group: str, *, min_size: int, desired: int, max_size: int = 6
) -> Iterator[tuple[str, Any]]:
    """Yield ``(endpoint_url, autoscaling client)`` with ``group`` created; the server stops on exit."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        requests.post(url + "/moto-api/reset", timeout=10)
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
        asg = boto3.client("autoscaling", region_name="us-east-1", endpoint_url=url)
        ec2.create_launch_template(
            LaunchTemplateName="gpu-p5", LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "p5.48xlarge"}
        )
        asg.create_auto_scaling_group(
            AutoScalingGroupName=group,
            LaunchTemplate={"LaunchTemplateName": "gpu-p5", "Version": "$Latest"},
            MinSize=min_size,
            MaxSize=max_size,
            DesiredCapacity=desired,
            AvailabilityZones=["us-east-1a"],
        )
        yield url, asg
    finally:
        server.stop()
