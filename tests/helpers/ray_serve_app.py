"""A tiny two-deployment Ray Serve app (prefill + decode stand-ins) for the Ray Serve actuator's tests."""

from __future__ import annotations

from typing import Any

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class Prefill:
    """Stands in for a prefill engine."""

    def __call__(self, request: Any) -> str:
        return "prefill"


@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class Decode:
    """Stands in for a decode engine."""

    def __call__(self, request: Any) -> str:
        return "decode"


@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class Router:
    """Ingress holding handles to both pools."""

    def __init__(self, prefill: Any, decode: Any) -> None:
        self.prefill, self.decode = prefill, decode

    async def __call__(self, request: Any) -> str:
        return "ok"


app = Router.bind(Prefill.bind(), Decode.bind())
