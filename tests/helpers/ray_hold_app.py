"""A Ray Serve deployment that holds each request ``?s=`` seconds, for drain tests of the Ray Serve actuator."""

from __future__ import annotations

import asyncio
from typing import Any

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class Hold:
    """Answers after holding the request, like an engine decoding a long sequence."""

    async def __call__(self, request: Any) -> str:
        await asyncio.sleep(float(request.query_params.get("s", "3")))
        return "done"


app = Hold.bind()
