"""The admin gRPC API over a real server on loopback: every RPC's happy path and bad input, auth, streams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.controls import Controls
from pdscale.controller.admin.convert import dict_to_struct
from pdscale.controller.admin.hub import DecisionHub
from pdscale.controller.admin.server import AdminServer, start_admin_server
from pdscale.controller.admin.servicer import AdminServicer, RuntimeView
from pdscale.controller.core.guards import GuardSettings
from pdscale.controller.core.types import SLO, PoolRole, PoolSpec, Signals
from pdscale.controller.policies.static import StaticPolicy
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.plugins import Registry
from pdscale.controller.runtime.record import DecisionRecord
from pdscale.controller.runtime.settings import AdminSettings, SecretRef
from pdscale.controller.runtime.store import SqliteStore
from pdscale.testing import FakeActuator, ManualClock, StaticMetricsSource

TOKEN = "s3cret-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
POOLS = {
    "prefill": PoolSpec("prefill", PoolRole.PREFILL, gpus_per_replica=4, min_replicas=1, max_replicas=8),
    "decode": PoolSpec("decode", PoolRole.DECODE, gpus_per_replica=4, min_replicas=1, max_replicas=8),
}
BUSY = Signals(
    prompt_tokens_per_s=5000.0, request_rate_per_s=4.0, running_requests=50.0, waiting_requests=0.0, ttft_p99_ms=300.0
)


class Harness:
    """A Reconciler with fakes, its store and an admin server on its own event-loop thread."""

    def __init__(self, settings: AdminSettings, tmp: Path) -> None:
        self.clock = ManualClock(1000.0)
        self.actuator = FakeActuator({"prefill": 2, "decode": 2}, clock=self.clock)
        self.store = SqliteStore(tmp / "state.db")
        self.rec = Reconciler(
            pools=POOLS,
            source=StaticMetricsSource.ok({"prefill": BUSY, "decode": BUSY}),
            actuator=self.actuator,
            policy=StaticPolicy({"replicas": {"prefill": 3}}),
            slo=SLO(1000, 50),
            tick_s=30.0,
            budget_gpus=64,
            guard_settings=GuardSettings(max_step_up=8, max_step_down=8, scale_down_window_s=0.0),
            recorder=self.store,
        )
        self.controls = Controls(self.rec, self.store, Registry())
        self.hub = DecisionHub()
        self.servicer = AdminServicer(self.controls, RuntimeView(clock=self.clock, model="m"), self.hub)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: AdminServer = self.call(start_admin_server(self.servicer, settings))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def tick(self) -> DecisionRecord:
        """One reconcile tick, published to watchers like the daemon does."""
        result = self.rec.run_once(self.clock.advance(30.0))
        rec = DecisionRecord(id=result.record_id, decision=result.decision, outcomes=result.outcomes)
        done: Future[None] = Future()

        def publish() -> None:
            self.hub.publish(rec)
            done.set_result(None)

        self.loop.call_soon_threadsafe(publish)
        done.result(5)
        return rec

    def close(self) -> None:
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.store.close()


def _settings(**kw: Any) -> AdminSettings:
    base: dict[str, Any] = {"listen": "127.0.0.1:0", "token": SecretRef(env="PDSCALE_TEST_ADMIN_TOKEN")}
    base.update(kw)
    return AdminSettings(**base)


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
    h = Harness(_settings(), tmp_path)
    yield h
    h.close()


@pytest.fixture
def stub(harness: Harness) -> Iterator[pb_grpc.AdminServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{harness.server.port}") as ch:
        yield pb_grpc.AdminServiceStub(ch)


def _code(fn: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    code: grpc.StatusCode = info.value.code()
    return code


class TestReadOnly:
    def test_status_reports_pools_after_a_tick(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """GetStatus shows the actuator's targets seen at the tick, the decision, data state and GPUs held."""
        harness.tick()
        resp = stub.GetStatus(pb.GetStatusRequest())
        pools = {p.name: p for p in resp.pools}
        assert (pools["prefill"].target, pools["prefill"].desired) == (2, 3)
        assert pools["prefill"].last_outcome == "applied"
        assert pools["prefill"].data_state == "ok"
        assert resp.gpus_allocated == 16
        assert resp.budget_gpus == 64
        assert resp.policy == "static"

    def test_status_before_first_tick(self, stub: pb_grpc.AdminServiceStub) -> None:
        """Before any tick GetStatus answers with specs and no last tick time."""
        resp = stub.GetStatus(pb.GetStatusRequest())
        assert not resp.HasField("last_tick_s")
        assert [p.name for p in resp.pools] == ["prefill", "decode"]

    def test_list_pools(self, stub: pb_grpc.AdminServiceStub) -> None:
        """ListPools returns the configured specs."""
        assert {p.name: p.max_replicas for p in stub.ListPools(pb.ListPoolsRequest()).pools} == {
            "prefill": 8,
            "decode": 8,
        }

    def test_forecast_unknown_pool_is_not_found(self, stub: pb_grpc.AdminServiceStub) -> None:
        """GetForecast for an unknown pool says NOT_FOUND; an empty name is INVALID_ARGUMENT."""
        assert _code(lambda: stub.GetForecast(pb.GetForecastRequest(pool="nope"))) is grpc.StatusCode.NOT_FOUND
        assert _code(lambda: stub.GetForecast(pb.GetForecastRequest())) is grpc.StatusCode.INVALID_ARGUMENT

    def test_forecast_happy(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """GetForecast answers for a known pool with the last tick's time."""
        harness.tick()
        resp = stub.GetForecast(pb.GetForecastRequest(pool="decode"))
        assert resp.pool == "decode"
        assert resp.time_s == harness.clock.now

    def test_decisions_page(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """ListDecisions pages newest first and the token continues where the page ended."""
        for _ in range(5):
            harness.tick()
        first = stub.ListDecisions(pb.ListDecisionsRequest(page_size=2))
        second = stub.ListDecisions(pb.ListDecisionsRequest(page_size=2, page_token=first.next_page_token))
        assert [d.id for d in first.decisions] == [5, 4]
        assert [d.id for d in second.decisions] == [3, 2]

    def test_decisions_time_filter(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """since_s/until_s select decisions by loop-clock time."""
        for _ in range(3):
            harness.tick()
        resp = stub.ListDecisions(pb.ListDecisionsRequest(since_s=1060.0, until_s=1060.0, pool="prefill"))
        assert [d.time_s for d in resp.decisions] == [1060.0]

    @pytest.mark.parametrize(
        "request_",
        [
            pb.ListDecisionsRequest(page_size=5000),
            pb.ListDecisionsRequest(page_size=-1),
            pb.ListDecisionsRequest(page_token="garbage!"),
            pb.ListDecisionsRequest(since_s=10.0, until_s=5.0),
        ],
    )
    def test_decisions_bad_input(self, stub: pb_grpc.AdminServiceStub, request_: pb.ListDecisionsRequest) -> None:
        """Bad paging or time ranges are INVALID_ARGUMENT."""
        assert _code(lambda: stub.ListDecisions(request_)) is grpc.StatusCode.INVALID_ARGUMENT

    def test_explain_latest(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """ExplainDecision(0) returns the latest decision with its inputs and a summary line per pool."""
        harness.tick()
        resp = stub.ExplainDecision(pb.ExplainDecisionRequest())
        assert resp.decision.id == 1
        assert "observations" in resp.inputs.fields
        assert any(line.startswith("prefill: 2 -> 3") for line in resp.summary)

    def test_explain_bad_input(self, stub: pb_grpc.AdminServiceStub) -> None:
        """Unknown ids are NOT_FOUND, negative ones INVALID_ARGUMENT."""
        assert _code(lambda: stub.ExplainDecision(pb.ExplainDecisionRequest(id=42))) is grpc.StatusCode.NOT_FOUND
        assert _code(lambda: stub.ExplainDecision(pb.ExplainDecisionRequest(id=-1))) is grpc.StatusCode.INVALID_ARGUMENT

    def test_plugins_listed(self, stub: pb_grpc.AdminServiceStub) -> None:
        """ListPlugins includes the built-in static policy."""
        names = {(p.group, p.name) for p in stub.ListPlugins(pb.ListPluginsRequest()).plugins}
        assert ("pdscale.policies", "static") in names


class TestDryRun:
    def test_needs_a_tick(self, stub: pb_grpc.AdminServiceStub) -> None:
        """Before the first tick DryRun is FAILED_PRECONDITION."""
        assert _code(lambda: stub.DryRun(pb.DryRunRequest())) is grpc.StatusCode.FAILED_PRECONDITION

    def test_changes_nothing(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """A dry run with an override shows the new target but calls no actuator and stores nothing."""
        harness.tick()
        calls, stored = list(harness.actuator.calls), harness.store.count()
        req = pb.DryRunRequest(overrides=[pb.Override(pool="decode", mode=pb.OVERRIDE_MODE_EXACT, replicas=6)])
        resp = stub.DryRun(req)
        assert {p.pool: p.target for p in resp.decision.pools}["decode"] == 6
        assert harness.actuator.calls == calls
        assert harness.store.count() == stored
        assert harness.rec.overrides == {}

    def test_other_policy(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """A dry run can try another policy's parameters."""
        harness.tick()
        params = dict_to_struct({"replicas": {"prefill": 5}})
        resp = stub.DryRun(pb.DryRunRequest(policy="static", policy_params=params))
        assert {p.pool: p.target for p in resp.decision.pools}["prefill"] == 5

    def test_bad_budget(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """A budget below the pools' floor is INVALID_ARGUMENT."""
        harness.tick()
        assert _code(lambda: stub.DryRun(pb.DryRunRequest(budget_gpus=1))) is grpc.StatusCode.INVALID_ARGUMENT


class TestMutations:
    def test_unauthenticated_mutation_refused(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """Pause without a token is UNAUTHENTICATED and pauses nothing."""
        assert _code(lambda: stub.Pause(pb.PauseRequest())) is grpc.StatusCode.UNAUTHENTICATED
        assert harness.rec.paused == set()

    def test_wrong_token_refused(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """A wrong bearer token is UNAUTHENTICATED."""
        bad = (("authorization", "Bearer nope"),)
        assert _code(lambda: stub.Pause(pb.PauseRequest(), metadata=bad)) is grpc.StatusCode.UNAUTHENTICATED
        assert harness.rec.paused == set()

    def test_pause_and_resume_one_pool(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """Pausing a pool holds it; resuming all clears the pause, and both persist."""
        stub.Pause(pb.PauseRequest(pool="decode", reason="maintenance"), metadata=AUTH)
        assert harness.store.paused() == {"decode": "maintenance"}
        rec = harness.tick()
        assert rec.decision.pools["decode"].guards == ("paused",)
        assert list(stub.Resume(pb.ResumeRequest(), metadata=AUTH).paused) == []
        assert harness.store.paused() == {}

    def test_resume_one_while_all_paused(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """Resuming one pool while all are paused leaves the others paused."""
        stub.Pause(pb.PauseRequest(), metadata=AUTH)
        assert list(stub.Resume(pb.ResumeRequest(pool="prefill"), metadata=AUTH).paused) == ["decode"]

    def test_pause_unknown_pool(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """Pausing an unknown pool is NOT_FOUND and changes nothing."""
        code = _code(lambda: stub.Pause(pb.PauseRequest(pool="nope"), metadata=AUTH))
        assert code is grpc.StatusCode.NOT_FOUND
        assert harness.rec.paused == set()

    def test_override_applies_next_tick(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """An exact override drives the next tick's target and expires after its ttl."""
        req = pb.SetOverrideRequest(pool="decode", mode=pb.OVERRIDE_MODE_EXACT, replicas=5, ttl_s=45.0)
        resp = stub.SetOverride(req, metadata=AUTH)
        assert resp.override.expires_s == 1045.0
        assert harness.tick().decision.pools["decode"].target == 5
        harness.tick()
        assert "decode" not in harness.rec.overrides

    @pytest.mark.parametrize(
        "request_",
        [
            pb.SetOverrideRequest(pool="decode", mode=pb.OVERRIDE_MODE_EXACT, replicas=99),
            pb.SetOverrideRequest(pool="decode", replicas=3),
            pb.SetOverrideRequest(pool="decode", mode=pb.OVERRIDE_MODE_MIN, replicas=3, ttl_s=-5.0),
            pb.SetOverrideRequest(mode=pb.OVERRIDE_MODE_MIN, replicas=3),
        ],
    )
    def test_override_bad_input(
        self, harness: Harness, stub: pb_grpc.AdminServiceStub, request_: pb.SetOverrideRequest
    ) -> None:
        """Out-of-bounds, modeless, negative-ttl or poolless overrides are INVALID_ARGUMENT and change nothing."""
        assert _code(lambda: stub.SetOverride(request_, metadata=AUTH)) is grpc.StatusCode.INVALID_ARGUMENT
        assert harness.rec.overrides == {}
        assert harness.store.overrides() == {}

    def test_clear_override(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """ClearOverride removes a pin and says whether there was one."""
        stub.SetOverride(pb.SetOverrideRequest(pool="decode", mode=pb.OVERRIDE_MODE_MIN, replicas=3), metadata=AUTH)
        assert stub.ClearOverride(pb.ClearOverrideRequest(pool="decode"), metadata=AUTH).cleared
        assert not stub.ClearOverride(pb.ClearOverrideRequest(pool="decode"), metadata=AUTH).cleared
        assert harness.store.overrides() == {}

    def test_set_policy(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """SetPolicy builds the plugin and the next tick uses it."""
        params = dict_to_struct({"replicas": {"prefill": 6}})
        stub.SetPolicy(pb.SetPolicyRequest(name="static", params=params), metadata=AUTH)
        assert harness.tick().decision.pools["prefill"].target == 6
        assert harness.store.get_value("policy") == {"name": "static", "params": {"replicas": {"prefill": 6}}}

    def test_set_policy_bad_input(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """Unknown policies are NOT_FOUND, bad parameters INVALID_ARGUMENT; the old policy stays."""
        before = harness.rec.policy
        unknown = pb.SetPolicyRequest(name="nope")
        bad = pb.SetPolicyRequest(name="static", params=dict_to_struct({"replicas": {"prefill": -1}}))
        assert _code(lambda: stub.SetPolicy(unknown, metadata=AUTH)) is grpc.StatusCode.NOT_FOUND
        assert _code(lambda: stub.SetPolicy(bad, metadata=AUTH)) is grpc.StatusCode.INVALID_ARGUMENT
        assert harness.rec.policy is before

    def test_update_slo(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """UpdateSLO changes only the given fields."""
        resp = stub.UpdateSLO(pb.UpdateSLORequest(ttft_ms=500.0), metadata=AUTH)
        assert (resp.slo.ttft_ms, resp.slo.itl_ms) == (500.0, 50.0)
        assert harness.rec.slo.ttft_ms == 500.0

    @pytest.mark.parametrize(
        "request_",
        [pb.UpdateSLORequest(), pb.UpdateSLORequest(ttft_ms=-1.0), pb.UpdateSLORequest(quantile=float("inf"))],
    )
    def test_update_slo_bad(
        self, harness: Harness, stub: pb_grpc.AdminServiceStub, request_: pb.UpdateSLORequest
    ) -> None:
        """Empty, negative or non-finite SLO updates are INVALID_ARGUMENT and change nothing."""
        assert _code(lambda: stub.UpdateSLO(request_, metadata=AUTH)) is grpc.StatusCode.INVALID_ARGUMENT
        assert harness.rec.slo == SLO(1000, 50)

    def test_update_budget(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """UpdateBudget sets and removes the budget."""
        assert stub.UpdateBudget(pb.UpdateBudgetRequest(max_gpus=32), metadata=AUTH).max_gpus == 32
        assert harness.rec.budget_gpus == 32
        assert not stub.UpdateBudget(pb.UpdateBudgetRequest(unlimited=True), metadata=AUTH).HasField("max_gpus")
        assert harness.rec.budget_gpus is None

    @pytest.mark.parametrize(
        "request_",
        [
            pb.UpdateBudgetRequest(),
            pb.UpdateBudgetRequest(max_gpus=4),
            pb.UpdateBudgetRequest(max_gpus=8, unlimited=True),
        ],
    )
    def test_update_budget_bad(
        self, harness: Harness, stub: pb_grpc.AdminServiceStub, request_: pb.UpdateBudgetRequest
    ) -> None:
        """Neither/both fields or a budget below the pools' floor are INVALID_ARGUMENT."""
        assert _code(lambda: stub.UpdateBudget(request_, metadata=AUTH)) is grpc.StatusCode.INVALID_ARGUMENT
        assert harness.rec.budget_gpus == 64


class TestWatch:
    def test_stream_delivers_new_decisions(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """A watcher receives decisions made after it subscribed."""
        stream = stub.WatchDecisions(pb.WatchDecisionsRequest(pool="prefill"))
        _wait(lambda: harness.hub.subscribers == 1)
        harness.tick()
        first = next(stream)
        assert first.id == 1
        stream.cancel()

    def test_backlog_after_id(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """after_id replays stored decisions first, oldest first."""
        for _ in range(3):
            harness.tick()
        stream = stub.WatchDecisions(pb.WatchDecisionsRequest(after_id=1))
        assert [next(stream).id, next(stream).id] == [2, 3]
        stream.cancel()

    def test_cancel_unsubscribes(self, harness: Harness, stub: pb_grpc.AdminServiceStub) -> None:
        """Cancelling the stream removes the server-side subscriber."""
        stream = stub.WatchDecisions(pb.WatchDecisionsRequest())
        _wait(lambda: harness.hub.subscribers == 1)
        stream.cancel()
        _wait(lambda: harness.hub.subscribers == 0)
        assert harness.hub.subscribers == 0

    def test_unknown_pool(self, stub: pb_grpc.AdminServiceStub) -> None:
        """Watching an unknown pool is NOT_FOUND."""
        stream = stub.WatchDecisions(pb.WatchDecisionsRequest(pool="nope"))
        assert _code(lambda: next(stream)) is grpc.StatusCode.NOT_FOUND


def _wait(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if cond():
            return
        deadline.wait(0.01)


class TestServerOptions:
    def test_health_and_reflection(self, harness: Harness) -> None:
        """The standard health service says SERVING for AdminService."""
        with grpc.insecure_channel(f"127.0.0.1:{harness.server.port}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="pdscale.v1.AdminService")
            )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

    def test_read_only_auth(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With auth_read_only, GetStatus needs the token too."""
        monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
        h = Harness(_settings(auth_read_only=True), tmp_path)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{h.server.port}") as ch:
                s = pb_grpc.AdminServiceStub(ch)
                assert _code(lambda: s.GetStatus(pb.GetStatusRequest())) is grpc.StatusCode.UNAUTHENTICATED
                assert s.GetStatus(pb.GetStatusRequest(), metadata=AUTH).tick_s == 30.0
        finally:
            h.close()

    def test_message_size_limit(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Requests larger than max_message_bytes are refused with RESOURCE_EXHAUSTED."""
        monkeypatch.setenv("PDSCALE_TEST_ADMIN_TOKEN", TOKEN)
        h = Harness(_settings(max_message_bytes=2048), tmp_path)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{h.server.port}") as ch:
                s = pb_grpc.AdminServiceStub(ch)
                big = pb.PauseRequest(pool="decode", reason="x" * 5000)
                assert _code(lambda: s.Pause(big, metadata=AUTH)) is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert h.rec.paused == set()
        finally:
            h.close()
