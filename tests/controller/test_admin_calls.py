"""How admin calls fail (calls.CallGuard): undecodable requests, handler bugs, stream bugs, long messages."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from structlog.testing import capture_logs

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.calls import MAX_MESSAGE_CHARS, shorten
from tests.controller.test_admin_api import AUTH, Harness, harness, stub  # noqa: F401  (fixtures)

GARBAGE = b"\xff\xff\xff\x07not a protobuf"
UNARY = ["GetStatus", "ListPools", "GetForecast", "ListDecisions", "ExplainDecision", "DryRun", "Pause", "SetPolicy"]


def _drain(call: Any, *args: Any, **kw: Any) -> None:
    result = call(*args, **kw)
    if hasattr(result, "__iter__") and not isinstance(result, bytes):
        list(result)


def _raw_code(call: Any, *args: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _drain(call, *args, **kw)
    return info.value


@pytest.fixture
def channel(harness: Harness) -> Iterator[grpc.Channel]:  # noqa: F811
    with grpc.insecure_channel(f"127.0.0.1:{harness.server.port}") as ch:
        yield ch


def test_undecodable_requests_are_invalid_argument_with_one_log_line(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that are no request message: INVALID_ARGUMENT naming the type, one structured line, no traceback."""
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        for name in UNARY:
            err = _raw_code(channel.unary_unary(f"/pdscale.v1.AdminService/{name}"), GARBAGE, metadata=AUTH, timeout=5)
            assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            assert f"pdscale.v1.{name}Request" in (err.details() or "")
        err = _raw_code(channel.unary_stream("/pdscale.v1.AdminService/WatchDecisions"), GARBAGE, timeout=5)
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [e["event"] for e in events] == ["admin_request_undecodable"] * (len(UNARY) + 1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_handler_bug_is_internal_with_one_error_line(harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:  # noqa: F811
    """An unexpected exception in a handler: INTERNAL naming its type only, one ERROR line without traceback."""

    def boom() -> int:
        raise RuntimeError("secret internals http://u:pw@db/")

    harness.servicer.view.ticks = boom
    with capture_logs() as events:
        err = _raw_code(stub.GetStatus, pb.GetStatusRequest(), timeout=5)
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "RuntimeError" in (err.details() or "")
    assert "secret internals" not in (err.details() or "")
    errors = [e for e in events if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["admin_call_failed"]
    assert "exc_info" not in errors[0]
    assert "u:pw" not in errors[0]["detail"]


def test_stream_bug_is_internal(harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:  # noqa: F811
    """A bug inside WatchDecisions is INTERNAL (not UNKNOWN) with one ERROR line."""
    harness.tick()

    def broken(**_: Any) -> list[Any]:
        raise KeyError("a bug")

    harness.store.query = broken  # type: ignore[method-assign]
    with capture_logs() as events:
        err = _raw_code(stub.WatchDecisions, pb.WatchDecisionsRequest(after_id=1), timeout=5)
    assert err.code() is grpc.StatusCode.INTERNAL
    assert [e["event"] for e in events if e["log_level"] == "error"] == ["admin_call_failed"]


def test_failing_store_is_unavailable_not_internal(harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:  # noqa: F811
    """A SQLite failure under a call (disk full, locked) is UNAVAILABLE, retry later, with no ERROR line."""
    harness.tick()

    def full(**_: Any) -> list[Any]:
        raise sqlite3.OperationalError("database or disk is full")

    harness.store.query = full  # type: ignore[method-assign]
    with capture_logs() as events:
        err = _raw_code(stub.ListDecisions, pb.ListDecisionsRequest(), timeout=5)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert "retry later" in (err.details() or "")
    assert [e["event"] for e in events if e["log_level"] == "error"] == []


def test_oversized_pool_name_stays_not_found(stub: pb_grpc.AdminServiceStub) -> None:  # noqa: F811
    """A 1 MB pool name is NOT_FOUND with a short message (not a metadata-size error on the client)."""
    for call, req in (
        (stub.GetForecast, pb.GetForecastRequest(pool="p" * 1_000_000)),
        (stub.Pause, pb.PauseRequest(pool="p" * 1_000_000)),
    ):
        err = _raw_code(call, req, metadata=AUTH, timeout=5)
        assert err.code() is grpc.StatusCode.NOT_FOUND
        assert len(err.details() or "") <= MAX_MESSAGE_CHARS


def test_shorten_says_how_much_was_cut() -> None:
    """shorten keeps short text and cuts long text to the limit, naming the characters left out."""
    assert shorten("abc", 10) == "abc"
    cut = shorten("x" * 1000, 100)
    assert len(cut) <= 100
    assert cut.endswith("(940 more characters)")


def test_reflection_and_health_streams_pass_through(channel: grpc.Channel) -> None:
    """The guard keeps reflection (stream-stream) and health Watch working; garbage into reflection is refused."""
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    (answer,) = reflect.ServerReflectionInfo(iter([ask]), timeout=5)
    assert "pdscale.v1.AdminService" in {s.name for s in answer.list_services_response.service}
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    raw = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert _raw_code(raw, iter([GARBAGE]), timeout=5).code() is grpc.StatusCode.INVALID_ARGUMENT
