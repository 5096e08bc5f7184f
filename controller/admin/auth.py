"""Bearer-token authorisation for the admin API (a grpc.aio server interceptor).

Mutating calls need ``authorization: Bearer <token>`` metadata; read-only calls too when
``admin.auth_read_only`` is set. Tokens are compared with ``hmac.compare_digest``. Without a configured token,
mutations are allowed only when the server listens on loopback (the default), and refused otherwise.
Health and reflection services are never gated (probes and tooling need them).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["MUTATING_METHODS", "READ_METHODS", "SERVICE", "TokenAuthInterceptor"]

SERVICE = "pdscale.v1.AdminService"
MUTATING_METHODS = frozenset(
    {"Pause", "Resume", "SetOverride", "ClearOverride", "SetPolicy", "UpdateSLO", "UpdateBudget"}
)
READ_METHODS = frozenset(
    {
        "GetStatus",
        "ListPools",
        "GetForecast",
        "ListDecisions",
        "WatchDecisions",
        "ExplainDecision",
        "DryRun",
        "ListPlugins",
    }
)
"""Calls that change nothing. A method in neither set (a new RPC not classified yet) is treated as mutating."""
STREAMING_METHODS = frozenset({"WatchDecisions"})


def _deny(code: grpc.StatusCode, message: str, streaming: bool) -> grpc.RpcMethodHandler:
    if streaming:

        async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(code, message)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(deny_stream)

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(deny)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses AdminService calls that lack the required bearer token."""

    def __init__(self, token: str | None, *, auth_read_only: bool = False, allow_without_token: bool = True) -> None:
        self._token = token.encode() if token else None
        self.auth_read_only = auth_read_only
        self.allow_without_token = allow_without_token

    def check(self, method: str, metadata: tuple[tuple[str, str | bytes], ...]) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may proceed, else the status code and message to refuse it with."""
        service, _, name = method.lstrip("/").rpartition("/")
        if service != SERVICE:
            return None
        mutating = name not in READ_METHODS
        if not (mutating or self.auth_read_only):
            return None
        if self._token is None:
            if self.allow_without_token:
                return None
            why = "changes the daemon" if mutating else "is a read and admin.auth_read_only is set"
            return (
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name} {why}, and no admin token is configured; set admin.token in the settings file",
            )
        header = next((v for k, v in metadata if k.lower() == "authorization"), None)
        if header is None:
            return grpc.StatusCode.UNAUTHENTICATED, f"{name} needs 'authorization: Bearer <token>' metadata"
        text = header.decode("latin-1") if isinstance(header, bytes) else header
        scheme, _, given = text.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'"
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid for this daemon"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        refused = self.check(method, tuple(handler_call_details.invocation_metadata or ()))  # type: ignore[attr-defined]
        if refused is None:
            return await continuation(handler_call_details)
        return _deny(*refused, streaming=method.rpartition("/")[2] in STREAMING_METHODS)
