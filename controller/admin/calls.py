"""How every admin call fails, in one place: a grpc.aio interceptor around each method handler.

- A request that does not decode as its message type is INVALID_ARGUMENT (grpc would answer UNKNOWN and log a
  multi-line traceback per call) and logs one ``admin_request_undecodable`` line.
- An ``AdminError`` raised by a handler becomes its status code with its message.
- The state store failing under a call: a damaged file is FAILED_PRECONDITION with the fix (``pdscale serve
  --state-recover``), reported once by the store itself; any other SQLite error (disk full, locked) is UNAVAILABLE
  (retry later), one ``admin_call_store_failed`` line at WARNING.
- Anything else is a bug: INTERNAL naming only the exception type, and one ``admin_call_failed`` line at ERROR
  (the traceback only at debug level).

Every status message is capped at ``MAX_MESSAGE_CHARS`` so an oversized input echoed back never turns the answer
into a metadata-size error on the client.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, NoReturn

import grpc
import structlog

from pdscale.controller.admin.controls import AdminError, ErrorKind
from pdscale.controller.runtime.redact import redact_text
from pdscale.controller.runtime.state_file import StoreDamagedError

__all__ = ["MAX_MESSAGE_CHARS", "CallGuard", "guard_handler", "shorten"]

log = structlog.get_logger(__name__)

MAX_MESSAGE_CHARS = 512
_STATUS: Mapping[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
}


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... ({len(text) - limit + 40} more characters)"


class _Undecodable:
    """Stands in for a request whose bytes did not parse; the guarded behaviour refuses it."""

    __slots__ = ("error", "type_name")

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name = type_name
        self.error = error


class _BadRequestError(Exception):
    def __init__(self, bad: _Undecodable) -> None:
        super().__init__(
            f"the request is not a valid {bad.type_name} message ({type(bad.error).__name__}); "
            f"send a serialized {bad.type_name}"
        )


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "request"))


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    type_name = _type_name(deserializer)

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # any parse failure is the client's: refused in the behaviour
            return _Undecodable(type_name, exc)

    return deserialize


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise _BadRequestError(request)
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


async def _fail(exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> NoReturn:
    """Abort the call with the status ``exc`` stands for (re-raising cancellation and aborts as they are)."""
    if isinstance(exc, asyncio.CancelledError | grpc.aio.AbortError) or not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, AdminError):
        await context.abort(_STATUS[exc.kind], shorten(redact_text(str(exc))))
    if isinstance(exc, StoreDamagedError):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, shorten(redact_text(str(exc))))
    if isinstance(exc, sqlite3.Error):
        detail = shorten(redact_text(f"{type(exc).__name__}: {exc}"))
        log.warning("admin_call_store_failed", method=method, error=detail)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"the state store failed ({detail}); retry later")
    if isinstance(exc, _BadRequestError):
        log.info("admin_request_undecodable", method=method, peer=context.peer())
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    name = method.rpartition("/")[2]
    log.error("admin_call_failed", method=method, error=type(exc).__name__, detail=shorten(redact_text(str(exc))))
    log.debug("admin_call_failed_traceback", method=method, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"{name} failed inside the daemon ({type(exc).__name__}); see admin_call_failed"
    )
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


def _guard_behavior(behavior: Any, method: str, request_streaming: bool) -> Any:
    def arg(request: Any) -> Any:
        return _checked_stream(request) if request_streaming else _checked(request)

    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in behavior(arg(request), context):
                    yield item
            except BaseException as exc:
                await _fail(exc, context, method)

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(arg(request), context)
            except BaseException as exc:
                await _fail(exc, context, method)

        return call
    return behavior  # a synchronous handler (none are registered today) keeps grpc's own handling


_FACTORIES = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


def guard_handler(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with tolerant request decoding and the error handling described in the module docstring."""
    factory, attr = _FACTORIES[(bool(handler.request_streaming), bool(handler.response_streaming))]
    behavior = getattr(handler, attr)
    guarded = _guard_behavior(behavior, method, bool(handler.request_streaming))
    if guarded is behavior:
        return handler
    return factory(  # type: ignore[no-any-return, operator]
        guarded,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class CallGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every method handler (admin, health, reflection) with ``guard_handler``; install it first."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        return guard_handler(handler, method)
