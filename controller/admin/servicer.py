"""The AdminService implementation (grpc.aio) over a Reconciler, its state store and the plugin registry.

Read-only calls never take the reconciler's lock (they read the last tick's immutable result); mutations go
through ``Controls``, which never waits for a running tick either: a change runs on the event loop itself when
the locks it takes are free (no thread hop), else in a worker thread, so nothing the tick holds blocks the event
loop. Handlers raise
``AdminError`` for refusals; ``calls.CallGuard`` turns it (and any bug, and an undecodable request) into a status.
"""

# ruff: noqa: N802  (method names are the RPC names generated from admin.proto)
from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc

from pdscale.controller.admin import convert
from pdscale.controller.admin._gen import admin_pb2 as pb
from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc
from pdscale.controller.admin.controls import AdminError, Controls, ErrorKind
from pdscale.controller.admin.hub import DecisionHub
from pdscale.controller.core.decide import ALL_POOLS, DecideInput, decide
from pdscale.controller.core.types import DataState, Override
from pdscale.controller.runtime.leader import LeaderStatus, Role
from pdscale.controller.runtime.plugins import PluginGroup
from pdscale.controller.runtime.record import DecisionRecord, Outcome, PoolOutcome
from pdscale.controller.runtime.redact import redact_text

__all__ = ["AdminServicer", "RuntimeView"]

_DEFAULT_PAGE = 50
_MAX_PAGE = 1000
_CURSOR_PREFIX = "before:"
_MAX_TOKEN_CHARS = 64
_MAX_ID = 2**63 - 1
_T = TypeVar("_T")


@dataclasses.dataclass(slots=True)
class RuntimeView:
    """What the daemon tells the admin API beyond the reconciler: its clock, readiness and SLO attainment."""

    clock: Callable[[], float]
    model: str = ""
    ready: Callable[[], bool] = lambda: False
    ticks: Callable[[], int] = lambda: 0
    attainment: Callable[[str], float | None] = lambda _pool: None
    leadership: Callable[[], LeaderStatus] = lambda: LeaderStatus(Role.SINGLE, "")
    """Who leads (leader election); a standby answers reads and refuses writes naming the leader."""


def _invalid(message: str) -> AdminError:
    return AdminError(ErrorKind.INVALID_ARGUMENT, message)


def _page_token(before_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{before_id}".encode()).decode()


def _parse_token(token: str) -> int | None:
    if not token:
        return None
    try:
        if len(token) > _MAX_TOKEN_CHARS:
            raise ValueError(len(token))
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(text)
        before = int(text.removeprefix(_CURSOR_PREFIX))
        if not 1 <= before <= _MAX_ID:  # ids are SQLite integers: a larger one cannot have been issued
            raise ValueError(before)
        return before
    except (ValueError, UnicodeError, binascii.Error):
        raise _invalid("page_token is not one this server issued; pass next_page_token unchanged") from None


def _params(struct: Any, field: str) -> dict[str, Any]:
    """A request's Struct of plugin parameters; NaN or infinite numbers are refused (they have no JSON form)."""
    try:
        return convert.struct_to_dict(struct)
    except ValueError:
        raise _invalid(f"{field}: numbers must be finite (NaN and infinity are not allowed)") from None


def _refuse_on_standby(view: RuntimeView) -> None:
    st = view.leadership()
    if st.role is Role.STANDBY:
        leader = st.leader or "none elected yet"
        raise AdminError(
            ErrorKind.FAILED_PRECONDITION,
            f"this daemon ({st.identity}) is a standby and changes nothing; send writes to the leader: {leader}",
        )


def summary_lines(rec: DecisionRecord) -> list[str]:
    """One readable line per pool: previous -> target, the policy's reason, guards and outcome."""
    lines = []
    for name, p in rec.decision.pools.items():
        out = rec.outcomes.get(name)
        guards = ", ".join(p.guards) or "none"
        line = f"{name}: {p.previous} -> {p.target} (policy proposed {p.proposed}: {p.reason or 'no reason given'});"
        line += f" guards: {guards}"
        if out is not None:
            line += f"; outcome: {out.outcome.value}" + (f" ({out.detail})" if out.detail else "")
        lines.append(line)
    for f in rec.decision.flips:
        lines.append(f"flip {f.count} replica(s) {f.from_pool} -> {f.to_pool}")
    return [redact_text(line) for line in lines]


class AdminServicer(pb_grpc.AdminServiceServicer):  # type: ignore[misc]
    """AdminService over one Reconciler (via ``Controls``) and its store."""

    def __init__(self, controls: Controls, view: RuntimeView, hub: DecisionHub | None = None) -> None:
        self.controls = controls
        self.rec = controls.rec
        self.store = controls.store
        self.view = view
        self.hub = hub or DecisionHub()

    # -- read-only ----------------------------------------------------------------------------------------
    async def GetStatus(self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext) -> pb.GetStatusResponse:
        rec = self.rec
        last = rec.last
        paused = set(rec.paused)
        overrides = dict(rec.overrides)
        resp = pb.GetStatusResponse(
            model=self.view.model,
            policy=self.controls.policy_name,
            policy_params=convert.shown_struct(rec.policy_params),
            slo=convert.slo_to_pb(rec.slo),
            paused_all=ALL_POOLS in paused,
            ticks=self.view.ticks(),
            dry_run=rec.dry_run,
            ready=self.view.ready(),
            tick_s=rec.tick_s,
        )
        lead = self.view.leadership()
        resp.role, resp.leader, resp.identity = lead.role.value, lead.leader, lead.identity
        resp.sources.update(self.controls.status_sources())
        if rec.budget_gpus is not None:
            resp.budget_gpus = rec.budget_gpus
        allocated = 0
        for name, spec in rec.pools.items():
            ps = pb.PoolStatus(
                name=name,
                role=spec.role.value,
                gpus_per_replica=spec.gpus_per_replica,
                min_replicas=spec.min_replicas,
                max_replicas=spec.max_replicas,
                paused=name in paused or ALL_POOLS in paused,
            )
            ps.sources.update(self.controls.pool_sources(name))
            if name in overrides:
                ps.override.CopyFrom(convert.override_to_pb(overrides[name]))
            att = self.view.attainment(name)
            if att is not None:
                ps.slo_attainment_ratio = att
            if last is not None:
                st = last.states[name]
                allocated += st.paid * spec.gpus_per_replica
                ps.target, ps.ready, ps.starting, ps.draining = st.target, st.ready, st.starting, st.draining
                obs = last.observations[name]
                ps.data_state, ps.data_reason = obs.state.value, redact_text(obs.reason)
                age = obs.staleness_s(last.now_s)
                if age is not None:
                    ps.staleness_s = age
                if obs.state is DataState.OK:
                    if obs.signals.ttft_p99_ms is not None:
                        ps.observed_ttft_p99_ms = obs.signals.ttft_p99_ms
                    if obs.signals.itl_p99_ms is not None:
                        ps.observed_itl_p99_ms = obs.signals.itl_p99_ms
                ps.forecasts.extend(convert.forecast_to_pb(s, f) for s, f in last.forecasts.get(name, {}).items())
                d = last.decision.pools.get(name)
                if d is not None:
                    ps.desired, ps.last_reason = d.target, redact_text(d.reason)
                    ps.last_guards.extend(d.guards)
                    for key in ("predicted_ttft_ms", "predicted_itl_ms"):
                        v = d.estimate.get(key)
                        if v is not None and math.isfinite(v):
                            setattr(ps, key, v)
                out = last.outcomes.get(name)
                ps.last_outcome = out.outcome.value if out else ""
            resp.pools.append(ps)
        resp.gpus_allocated = allocated
        if last is not None:
            resp.last_tick_s = last.now_s
            resp.last_decision_id = last.record_id
        return resp

    async def ListPools(self, request: pb.ListPoolsRequest, context: grpc.aio.ServicerContext) -> pb.ListPoolsResponse:
        return pb.ListPoolsResponse(pools=[convert.pool_spec_to_pb(s) for s in self.rec.pools.values()])

    async def GetForecast(
        self, request: pb.GetForecastRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetForecastResponse:
        if not request.pool:
            raise _invalid("pool is required")
        self.controls.check_pool(request.pool)
        resp = pb.GetForecastResponse(pool=request.pool)
        last = self.rec.last
        if last is not None:
            resp.time_s = last.now_s
            resp.forecasts.extend(convert.forecast_to_pb(s, f) for s, f in last.forecasts.get(request.pool, {}).items())
        return resp

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDecisionsResponse:
        size = request.page_size or _DEFAULT_PAGE
        if not 1 <= size <= _MAX_PAGE:
            raise _invalid(f"page_size must be between 1 and {_MAX_PAGE}, got {request.page_size}")
        since = request.since_s if request.HasField("since_s") else None
        until = request.until_s if request.HasField("until_s") else None
        for field, value in (("since_s", since), ("until_s", until)):
            if value is not None and math.isnan(value):
                raise _invalid(f"{field} must be a number, got NaN")
        if since is not None and until is not None and since > until:
            raise _invalid(f"since_s ({since}) is after until_s ({until})")
        if request.pool:
            self.controls.check_pool(request.pool)
        before = _parse_token(request.page_token)
        rows = await asyncio.to_thread(
            self.store.query, pool=request.pool or None, since_s=since, until_s=until, before_id=before, limit=size + 1
        )
        resp = pb.ListDecisionsResponse(decisions=[convert.decision_to_pb(r) for r in rows[:size]])
        if len(rows) > size:
            resp.next_page_token = _page_token(rows[size - 1].id)
        return resp

    async def WatchDecisions(
        self, request: pb.WatchDecisionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DecisionRecord]:
        if request.pool:
            self.controls.check_pool(request.pool)
        if request.after_id < 0:
            raise _invalid(f"after_id must be >= 0, got {request.after_id}")
        queue = self.hub.subscribe()
        try:
            last_id = 0
            if request.after_id > 0:
                backlog = await asyncio.to_thread(
                    self.store.query,
                    pool=request.pool or None,
                    after_id=request.after_id,
                    limit=1000,
                    oldest_first=True,
                )
                for r in backlog:
                    last_id = r.id
                    yield convert.decision_to_pb(r)
            while True:
                r = await queue.get()
                if r.id <= last_id or (request.pool and request.pool not in r.decision.pools):
                    continue
                yield convert.decision_to_pb(r)
        finally:
            self.hub.unsubscribe(queue)

    async def ExplainDecision(
        self, request: pb.ExplainDecisionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExplainDecisionResponse:
        if request.id < 0:
            raise _invalid(f"id must be >= 0 (0: the latest decision), got {request.id}")
        if request.id == 0:
            latest = await asyncio.to_thread(self.store.query, limit=1)
            if not latest:
                raise AdminError(ErrorKind.NOT_FOUND, "no decision recorded yet; retry after the first tick")
            found = await asyncio.to_thread(self.store.get, latest[0].id)
        else:
            found = await asyncio.to_thread(self.store.get, request.id)
        if found is None:
            raise AdminError(ErrorKind.NOT_FOUND, f"decision {request.id} is not stored (pruned or never made)")
        return pb.ExplainDecisionResponse(
            decision=convert.decision_to_pb(found),
            inputs=convert.shown_struct(found.inputs),
            summary=summary_lines(found),
        )

    async def DryRun(self, request: pb.DryRunRequest, context: grpc.aio.ServicerContext) -> pb.DryRunResponse:
        last = self.rec.last
        if last is None:
            raise AdminError(ErrorKind.FAILED_PRECONDITION, "no tick has run yet; retry after the first tick")
        c = self.controls
        live = self.rec.live()  # one consistent copy of the running settings
        same_policy = not request.policy or request.policy == c.policy_name
        if request.HasField("policy_params"):
            params: dict[str, Any] = _params(request.policy_params, "policy_params")
        else:
            params = dict(live.policy_params) if same_policy else {}
        if same_policy and not request.HasField("policy_params"):
            policy, state = live.policy, live.policy_state
        else:
            policy, state = c.build_policy(request.policy or c.policy_name, params).policy, {}
        slo = c.make_slo(
            request.ttft_ms if request.HasField("ttft_ms") else None,
            request.itl_ms if request.HasField("itl_ms") else None,
            request.quantile if request.HasField("quantile") else None,
        )
        if request.unlimited_budget and request.HasField("budget_gpus"):
            raise _invalid("set budget_gpus or unlimited_budget, not both")
        budget = live.budget_gpus
        if request.unlimited_budget:
            budget = None
        elif request.HasField("budget_gpus"):
            budget = c.check_budget(request.budget_gpus)
        overrides = dict(live.overrides)
        for pool in request.clear_overrides:
            c.check_pool(pool)
            overrides.pop(pool, None)
        for o in request.overrides:
            overrides[o.pool] = self._override_from_pb(o)
        ctx = self.rec.context(last.now_s, last.observations, last.states, last.forecasts, live)
        ctx = dataclasses.replace(ctx, slo=slo, budget_gpus=budget, state=state, params=params)
        out = decide(
            policy,
            DecideInput(
                ctx=ctx,
                guard_settings=live.guard_settings,
                guard_state=self.rec.guard_state,
                overrides=overrides,
                paused=frozenset() if request.ignore_pause else live.paused,
            ),
        )
        rec = DecisionRecord(
            id=0,
            decision=out.decision,
            outcomes={p: PoolOutcome(Outcome.DRY_RUN, "not applied") for p in out.decision.pools},
        )
        summary = summary_lines(rec)
        if out.error:
            summary.insert(0, redact_text(f"policy error: {out.error}"))
        return pb.DryRunResponse(decision=convert.decision_to_pb(rec), summary=summary)

    def _override_from_pb(self, o: pb.Override) -> Override:
        self.controls.check_pool(o.pool)
        mode = convert.MODE_FROM_PB.get(o.mode)
        if mode is None:
            raise _invalid(f"override for {o.pool!r}: mode is required (exact, min or max)")
        spec = self.rec.pools[o.pool]
        if not spec.min_replicas <= o.replicas <= spec.max_replicas:
            raise _invalid(
                f"override for {o.pool!r}: replicas {o.replicas} is outside [{spec.min_replicas}, {spec.max_replicas}]"
            )
        return Override(pool=o.pool, mode=mode, replicas=o.replicas, reason=o.reason)

    async def ListPlugins(
        self, request: pb.ListPluginsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPluginsResponse:
        reg = self.controls.registry
        return pb.ListPluginsResponse(
            plugins=[
                pb.Plugin(group=g.value, name=n, target=t, distribution=d)
                for g in PluginGroup
                for n, t, d in reg.describe(g)
            ]
        )

    # -- mutating -----------------------------------------------------------------------------------------
    async def _change(self, change: Callable[..., _T], *args: Any) -> _T:
        """Run an operator change now on the event loop when no other thread holds the admin write lock or the
        store's lock (the change then takes only microseconds of lock time and one small SQLite commit), else in
        a worker thread, so the event loop never waits on another thread."""
        locks = (self.controls.write_lock, self.store.lock)
        held = []
        try:
            for lock in locks:
                if not lock.acquire(blocking=False):
                    break
                held.append(lock)
            else:
                return change(*args)
        finally:
            for lock in reversed(held):
                lock.release()
        return await asyncio.to_thread(change, *args)

    async def Pause(self, request: pb.PauseRequest, context: grpc.aio.ServicerContext) -> pb.PauseResponse:
        _refuse_on_standby(self.view)
        paused = await self._change(self.controls.pause, request.pool, request.reason)
        return pb.PauseResponse(paused=paused)

    async def Resume(self, request: pb.ResumeRequest, context: grpc.aio.ServicerContext) -> pb.ResumeResponse:
        _refuse_on_standby(self.view)
        paused = await self._change(self.controls.resume, request.pool)
        return pb.ResumeResponse(paused=paused)

    async def SetOverride(
        self, request: pb.SetOverrideRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetOverrideResponse:
        _refuse_on_standby(self.view)
        if not request.pool:
            raise _invalid("pool is required")
        ttl = request.ttl_s if request.HasField("ttl_s") else None
        o = await self._change(
            self.controls.set_override,
            request.pool,
            convert.MODE_FROM_PB.get(request.mode),
            request.replicas,
            ttl,
            self.view.clock(),
            request.reason,
        )
        return pb.SetOverrideResponse(override=convert.override_to_pb(o))

    async def ClearOverride(
        self, request: pb.ClearOverrideRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClearOverrideResponse:
        _refuse_on_standby(self.view)
        if not request.pool:
            raise _invalid("pool is required")
        cleared = await self._change(self.controls.clear_override, request.pool)
        return pb.ClearOverrideResponse(cleared=cleared)

    async def SetPolicy(self, request: pb.SetPolicyRequest, context: grpc.aio.ServicerContext) -> pb.SetPolicyResponse:
        _refuse_on_standby(self.view)
        params = _params(request.params, "params")
        choice = await asyncio.to_thread(self.controls.set_policy, request.name, params)
        return pb.SetPolicyResponse(name=choice.name, params=convert.shown_struct(choice.params))

    async def UpdateSLO(self, request: pb.UpdateSLORequest, context: grpc.aio.ServicerContext) -> pb.UpdateSLOResponse:
        _refuse_on_standby(self.view)
        slo = await self._change(
            self.controls.update_slo,
            request.ttft_ms if request.HasField("ttft_ms") else None,
            request.itl_ms if request.HasField("itl_ms") else None,
            request.quantile if request.HasField("quantile") else None,
        )
        return pb.UpdateSLOResponse(slo=convert.slo_to_pb(slo))

    async def UpdateBudget(
        self, request: pb.UpdateBudgetRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateBudgetResponse:
        _refuse_on_standby(self.view)
        has = request.HasField("max_gpus")
        if has == request.unlimited:
            raise _invalid("set exactly one of max_gpus or unlimited")
        budget = await self._change(self.controls.update_budget, request.max_gpus if has else None)
        resp = pb.UpdateBudgetResponse()
        if budget is not None:
            resp.max_gpus = budget
        return resp
