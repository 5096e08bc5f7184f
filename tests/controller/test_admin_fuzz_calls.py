"""5,000 seeded hostile admin calls against a real server while the loop ticks: expected codes only, no hang,
no crash, at most one log line per call, and every read still works afterwards."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from tests.controller.test_admin_api import POOLS, TOKEN, Harness, _settings

CALLS = 5000
SEED = 18
ANSWERS = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,  # only for the made-up method names
}
TICKER = "fuzz-loop"
STRINGS = [
    "",
    "prefill",
    "decode",
    "*",
    "PREFILL",
    " decode",
    "decode\x00",
    "../../etc/passwd",
    "'; DROP TABLE decisions; --",
    "%s%n{0}{pool}",
    "\u202epool\u200b",
    "😀" * 50,
]
NUMBERS = [0.0, -0.0, 1.0, -1.0, 0.5, 0.99, 1e-300, 1e308, -1e308, float("nan"), float("inf"), -float("inf")]
INTS = [0, 1, -1, 2, 7, 8, 9, 2**31 - 1, -(2**31), 2**62, -(2**62), 2**63 - 1]
AUTHS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("authorization", f"Bearer {TOKEN}"),),
    (("authorization", f"bearer   {TOKEN}  "),),
    (("authorization", "Bearer wrong"),),
    (("authorization", "Basic " + TOKEN),),
    (("authorization", "Bearer"),),
    (("authorization", "Bearer " + "x" * 4000),),
]


class Gen:
    """Random hostile request fields from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def text(self) -> str:
        r = self.r
        roll = r.random()
        if roll < 0.6:
            return r.choice(STRINGS)
        if roll < 0.9:
            return "".join(chr(r.randrange(1, 0x2FFF)) for _ in range(r.randrange(0, 40)))
        return r.choice("ab*\x01") * r.choice([1025, 5000, 100_000])

    def number(self) -> float:
        return self.r.choice(NUMBERS) if self.r.random() < 0.7 else self.r.uniform(-1e4, 1e4)

    def integer(self, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
        v = self.r.choice(INTS) if self.r.random() < 0.7 else self.r.randrange(-100, 100)
        return max(lo, min(hi, v))

    def value(self, depth: int = 0) -> Any:
        r = self.r
        kind = r.randrange(6 if depth < 3 else 4)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return self.number()
        if kind == 3:
            return self.text()[:200]
        if kind == 4:
            return [self.value(depth + 1) for _ in range(r.randrange(4))]
        return {self.text()[:20]: self.value(depth + 1) for _ in range(r.randrange(4))}

    def params(self) -> struct_pb2.Struct:
        s = struct_pb2.Struct()
        r = self.r
        if r.random() < 0.4:
            pools = {r.choice(["prefill", "decode", self.text()[:20]]): self.value() for _ in range(r.randrange(3))}
            s.update({"replicas": pools})
        else:
            s.update({self.text()[:20]: self.value() for _ in range(r.randrange(4))})
        return s

    def maybe(self, p: float = 0.5) -> bool:
        return self.r.random() < p


def _request(g: Gen, method: str) -> Any:
    r = g.r
    if method == "GetStatus":
        return pb.GetStatusRequest()
    if method == "ListPools":
        return pb.ListPoolsRequest()
    if method == "ListPlugins":
        return pb.ListPluginsRequest()
    if method == "GetForecast":
        return pb.GetForecastRequest(pool=g.text())
    if method == "ListDecisions":
        req = pb.ListDecisionsRequest(
            pool=g.text() if g.maybe(0.3) else "",
            page_size=g.integer(-(2**31), 2**31 - 1),
            page_token=g.text()[:300] if g.maybe(0.3) else "",
        )
        if g.maybe(0.3):
            req.since_s = g.number()
        if g.maybe(0.3):
            req.until_s = g.number()
        return req
    if method == "ExplainDecision":
        return pb.ExplainDecisionRequest(id=g.integer())
    if method == "WatchDecisions":
        return pb.WatchDecisionsRequest(pool=g.text() if g.maybe(0.3) else "", after_id=g.integer())
    if method == "DryRun":
        req = pb.DryRunRequest(
            policy=r.choice(["", "static", "slo", "nope", g.text()[:30]]),
            unlimited_budget=g.maybe(0.2),
            ignore_pause=g.maybe(),
            clear_overrides=[g.text() for _ in range(r.randrange(3))],
        )
        for _ in range(r.randrange(3)):
            mode = r.randrange(-1, 5)
            req.overrides.append(pb.Override(pool=g.text(), mode=mode, replicas=g.integer(-(2**31), 2**31 - 1)))  # type: ignore[arg-type]
        if g.maybe(0.4):
            req.policy_params.CopyFrom(g.params())
        for field in ("ttft_ms", "itl_ms", "quantile"):
            if g.maybe(0.2):
                setattr(req, field, g.number())
        if g.maybe(0.3):
            req.budget_gpus = g.integer()
        return req
    if method in ("Pause", "Resume"):
        pool = r.choice(["", "prefill", "decode", g.text()])
        return pb.PauseRequest(pool=pool, reason=g.text()) if method == "Pause" else pb.ResumeRequest(pool=pool)
    if method == "SetOverride":
        req = pb.SetOverrideRequest(
            pool=r.choice(["prefill", "decode", g.text()]),
            mode=r.randrange(-1, 5),  # type: ignore[arg-type]
            replicas=g.integer(-(2**31), 2**31 - 1),
            reason=g.text(),
        )
        if g.maybe(0.4):
            req.ttl_s = g.number()
        return req
    if method == "ClearOverride":
        return pb.ClearOverrideRequest(pool=r.choice(["prefill", "decode", g.text()]))
    if method == "SetPolicy":
        return pb.SetPolicyRequest(
            name=r.choice(["static", "static", "slo", "nope", "", g.text()[:30]]), params=g.params()
        )
    if method == "UpdateSLO":
        req = pb.UpdateSLORequest()
        for field in ("ttft_ms", "itl_ms", "quantile"):
            if g.maybe():
                setattr(req, field, g.number())
        return req
    if method == "UpdateBudget":
        req = pb.UpdateBudgetRequest(unlimited=g.maybe(0.3))
        if g.maybe(0.7):
            req.max_gpus = g.integer()
        return req
    raise AssertionError(method)


METHODS = sorted(pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name)


def _corrupt(g: Gen, data: bytes) -> bytes:
    r = g.r
    roll = r.random()
    if roll < 0.3 or not data:
        return bytes(r.randrange(256) for _ in range(r.randrange(1, 64)))
    if roll < 0.6:
        return data[: r.randrange(len(data))] + b"\xff"
    buf = bytearray(data)
    for _ in range(r.randrange(1, 4)):
        buf[r.randrange(len(buf))] = r.randrange(256)
    return bytes(buf)


class Ticker(threading.Thread):
    """The control loop, ticking every 50 ms of wall time while the calls run."""

    def __init__(self, harness: Harness) -> None:
        super().__init__(name=TICKER, daemon=True)
        self.h = harness
        self.stop = threading.Event()
        self.ticks = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                self.h.tick()
                self.ticks += 1
            except BaseException as exc:  # the test fails on any: the loop must survive every admin change
                self.errors.append(exc)


def _thread_name(_: Any, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    event["thread"] = threading.current_thread().name
    return event


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, Ticker, grpc.Channel]]:
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(), tmp_path)
    h.tick()
    ticker = Ticker(h)
    ticker.start()
    with grpc.insecure_channel(f"127.0.0.1:{h.server.port}") as ch:
        yield h, ticker, ch
    ticker.stop.set()
    ticker.join(10)
    h.close()


def _watch(call: Callable[..., Any], req: Any, metadata: Any) -> grpc.StatusCode:
    """One streamed decision within 5 s, or the refusal; a valid watch that sends nothing is a hang."""
    stream = call(req, metadata=metadata, timeout=5)
    try:
        next(stream)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    finally:
        stream.cancel()
    return grpc.StatusCode.OK


def _one(ch: grpc.Channel, g: Gen, method: str, metadata: Any) -> grpc.StatusCode:
    path = f"/pdscale.v1.AdminService/{method}"
    if method not in METHODS:  # a made-up method: UNIMPLEMENTED, token or not
        try:
            ch.unary_unary(path)(g.text().encode()[:100], metadata=metadata, timeout=5)
        except grpc.RpcError as exc:
            unknown: grpc.StatusCode = exc.code()
            return unknown
        return grpc.StatusCode.OK
    raw = g.maybe(0.08)
    if method == "WatchDecisions":
        req = _request(g, method)
        if raw:
            call = ch.unary_stream(path)
            return _watch(call, _corrupt(g, req.SerializeToString()), metadata)
        return _watch(
            ch.unary_stream(path, pb.WatchDecisionsRequest.SerializeToString, pb.DecisionRecord.FromString),
            req,
            metadata,
        )
    req = _request(g, method)
    try:
        if raw:
            ch.unary_unary(path)(_corrupt(g, req.SerializeToString()), metadata=metadata, timeout=5)
        else:
            ch.unary_unary(path, type(req).SerializeToString)(req, metadata=metadata, timeout=5)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_hostile_calls_get_expected_answers_while_the_loop_runs(
    running: tuple[Harness, Ticker, grpc.Channel], caplog: pytest.LogCaptureFixture
) -> None:
    """5,000 seeded calls over every RPC (hostile fields, corrupt bytes, good/bad/no token): only expected codes,
    no hang, the loop keeps ticking, at most one log line per call, and reads work afterwards."""
    h, ticker, ch = running
    g = Gen(SEED)
    codes: Counter[str] = Counter()
    unexpected: list[tuple[str, str]] = []
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with structlog.testing.capture_logs(processors=[_thread_name]) as events:
        for i in range(CALLS):
            metadata = g.r.choice(AUTHS)
            method = g.r.choice([*METHODS, "DeleteEverything"]) if i % 50 == 49 else g.r.choice(METHODS)
            code = _one(ch, g, method, metadata)
            codes[code.name] += 1
            if code not in ANSWERS:
                unexpected.append((method, code.name))
    elapsed_s = time.monotonic() - started
    ticks_during = ticker.ticks
    ticker.stop.set()
    ticker.join(10)

    print(f"{CALLS} calls in {elapsed_s:.1f} s, {ticker.ticks} ticks: {dict(codes)}")
    assert not unexpected, (unexpected[:20], codes)
    assert ticker.errors == []
    assert ticks_during >= 10, f"the loop ticked {ticks_during} times in {elapsed_s:.0f} s"
    admin_lines = [e for e in events if e.get("thread") != TICKER]
    assert len(admin_lines) <= CALLS, Counter(e["event"] for e in admin_lines).most_common(5)
    assert not [e for e in admin_lines if e["log_level"] in ("error", "critical")]
    assert not [r for r in caplog.records if r.name.startswith("grpc")]
    # Nothing a hostile call did left state that breaks a read or the server.
    stub = pb_grpc.AdminServiceStub(ch)
    h.tick()
    assert stub.ListDecisions(pb.ListDecisionsRequest(page_size=1000)).decisions
    assert stub.ExplainDecision(pb.ExplainDecisionRequest()).decision.id > 0
    assert {p.name for p in stub.GetStatus(pb.GetStatusRequest()).pools} == set(POOLS)
    health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert h.rec.paused <= {"*", *POOLS}
    assert all(POOLS[p].min_replicas <= o.replicas <= POOLS[p].max_replicas for p, o in h.rec.overrides.items())
