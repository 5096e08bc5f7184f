"""The control loop: ``Reconciler.run_once(now)`` is one tick (``runtime.runner.Runner`` repeats it).

One tick, as data (DESIGN.md): fetch observations -> update forecasters -> policy -> guards -> actuate
(shrink before grow) -> record. The decision itself is the pure ``pdscale.controller.core.decide.decide``; this module
does the I/O around it and never lets one failing part kill the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from pdscale.controller.core.decide import DecideInput, decide
from pdscale.controller.core.guards import GuardSettings, GuardState
from pdscale.controller.core.protocols import (
    ActuationError,
    Actuator,
    CapacityModel,
    MetricsSource,
    Policy,
    PolicyContext,
    can_flip_roles,
    take_drain_result,
)
from pdscale.controller.core.types import (
    ROLE_SIGNALS,
    SLO,
    DataState,
    Decision,
    ErrorClass,
    Forecast,
    Override,
    PoolObservation,
    PoolSpec,
    PoolState,
    Signal,
    lead_time_s,
)
from pdscale.controller.runtime.decision_log import TickResult, log_scale_decisions
from pdscale.controller.runtime.intents import LateLandings
from pdscale.controller.runtime.loop_parts import (
    MAX_UNSAVED,
    Backoff,
    LiveSettings,
    NoIntent,
    SeasonalBook,
    acting_pools,
    feed_forecaster,
    inputs_summary,
    unwritable,
)
from pdscale.controller.runtime.loop_store import StoreWrites
from pdscale.controller.runtime.record import (
    DecisionRecord,
    InMemoryRecorder,
    IntentKind,
    Outcome,
    PoolOutcome,
    Recorder,
)
from pdscale.forecasting.base import Forecaster

__all__ = ["Backoff", "LiveSettings", "Reconciler", "TickResult"]

log = structlog.get_logger("pdscale.loop")


ForecasterFactory = Callable[[str, Signal], Forecaster]


class Reconciler(StoreWrites):
    """One model's pools, reconciled once per ``run_once(now)``. Thread-safe for the admin API's mutations.

    ``lock`` is held for a whole tick. What an operator changes (policy and its params and state, SLO, budget,
    overrides, pause) is guarded by ``settings_lock`` alone, held only to copy or change it, so a change never
    waits for a running tick: the tick decides on the copy it took (``live``), the next one sees the change.
    ``settings_lock`` is taken last and never held across a store call, so it cannot deadlock with a change that
    holds the store's lock.
    """

    def __init__(
        self,
        *,
        pools: Mapping[str, PoolSpec],
        source: MetricsSource,
        actuator: Actuator,
        policy: Policy,
        slo: SLO,
        tick_s: float,
        forecaster_factory: ForecasterFactory | None = None,
        budget_gpus: int | None = None,
        capacity: CapacityModel | None = None,
        guard_settings: GuardSettings | None = None,
        recorder: Recorder | None = None,
        dry_run: bool = False,
        adopt_external_changes: bool = True,
        backoff: Backoff | None = None,
        policy_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.pools = dict(pools)
        self.source = source
        self.actuator = actuator
        self.policy = policy
        self.policy_params: Mapping[str, Any] = dict(policy_params or {})
        self.slo = slo
        self.tick_s = tick_s
        self._read_states: dict[str, PoolState] = {}
        self._maybe_applied: dict[str, int] = {}
        """Per pool, the largest target whose write failed since the last read (it may have landed: counted then)."""
        self.budget_gpus = budget_gpus
        self.capacity = capacity
        self.guard_settings = guard_settings or GuardSettings()
        self.recorder: Recorder = recorder or InMemoryRecorder()
        self.dry_run = dry_run
        self.adopt_external_changes = adopt_external_changes
        self.backoff = backoff or Backoff()
        self.overrides: dict[str, Override] = {}
        self.paused: set[str] = set()
        self.external_hold: set[str] = set()
        """Pools held after another owner's change (``on_external_change: hold``), also in ``paused``."""
        self._hold_paused: set[str] = set()
        self.store_error: str | None = None  # why the last state write failed; /readyz is 503 meanwhile
        self._unsaved: list[DecisionRecord] = []
        self.policy_state: Mapping[str, Any] = {}
        self.guard_state = GuardState()
        self.last: TickResult | None = None
        self.lock = threading.RLock()
        self.settings_lock = threading.RLock()
        self._applied: dict[str, int] = self.recorder.last_applied()
        self.landings = LateLandings(self.recorder)
        self.landings.load()
        self._forecasters: dict[tuple[str, Signal], Forecaster] = {}
        self._reported: set[tuple[str, Signal]] = set()
        if forecaster_factory is not None:
            for name, spec in self.pools.items():
                for sig in ROLE_SIGNALS[spec.role]:
                    self._forecasters[(name, sig)] = forecaster_factory(name, sig)
        self.seasonal = SeasonalBook(list(self._forecasters), tick_s)  # what the forecasters saw, for seasonal floors

    def reload_applied(self) -> None:
        """Re-read the targets pdscale last applied from the recorder (after a restart settled open intents)."""
        with self.lock:
            self._applied = self.recorder.last_applied()
            self.landings.load()
            with self.settings_lock:  # never held across a store call (an admin change holds the store's lock)
                self.paused -= self._hold_paused
                self._hold_paused.clear()
            self.external_hold.clear()  # found again at the next read if the difference persists

    # -- inputs ---------------------------------------------------------------------------------
    def _fetch(self, now: float) -> dict[str, PoolObservation]:
        try:
            got = dict(self.source.fetch(now))
        except Exception as exc:
            log.warning("metrics_fetch_failed", error=f"{type(exc).__name__}: {exc}")
            return {p: PoolObservation.missing(p, f"metrics source failed: {exc}") for p in self.pools}
        return {p: got.get(p) or PoolObservation.missing(p, "pool absent from metrics source") for p in self.pools}

    def _states(self, now: float) -> tuple[dict[str, PoolState], dict[str, str]]:
        states: dict[str, PoolState] = {}
        errors: dict[str, str] = {}
        for name in self.pools:
            try:
                target = self.actuator.target_size(name)
                reps = list(self.actuator.replicas(name))
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                states[name] = self._unread_state(name)
                log.warning("actuator_read_failed", pool=name, error=errors[name])
                continue
            states[name] = PoolState.from_replicas(name, target, reps)
            self._read_states[name] = states[name]
            self._maybe_applied.pop(name, None)
            self._check_external(name, target, now)
        return states, errors

    def _unread_state(self, name: str) -> PoolState:
        """A pool whose actuator read failed, counted at its worst case for the budget: the last counts read
        (never zero), with the larger of their target and the last applied one; before any read, every replica
        of the applied target held. The pool itself holds this tick."""
        known = self._applied.get(name, self.pools[name].min_replicas)
        last = self._read_states.get(name)
        if last is None:
            return PoolState(pool=name, target=known, ready=known)
        return replace(last, target=max(last.target, known, self._maybe_applied.get(name, 0)))

    def _check_external(self, pool: str, target: int, now: float) -> None:
        applied = self._applied.get(pool)
        if applied is None:
            self._applied[pool] = target
            return
        if pool in self.external_hold and self._hold_released(pool, now):
            log.info("external_hold_released", pool=pool, ours=applied, theirs=target, now=now)
            self._adopt(pool, target)
            return
        if target == applied:
            return
        if self._claim_landing(pool, target, now):  # our own call, landed after all
            self._adopt(pool, target)
            return
        if self.adopt_external_changes:
            log.warning("external_change_adopted", pool=pool, ours=applied, theirs=target, now=now)
            self._applied[pool] = target
            self._persist(self.recorder.set_applied, pool, target)
        else:
            if pool not in self.external_hold:
                log.warning("external_change_held", pool=pool, ours=applied, theirs=target, now=now)
                with self.settings_lock:
                    if pool not in self.paused:
                        self._hold_paused.add(pool)
                        self.paused.add(pool)
            self.external_hold.add(pool)

    def _claim_landing(self, pool: str, target: int, now: float) -> bool:
        found: list[object] = []
        self._persist(lambda: found.append(self.landings.claim(pool, target, now)))
        return bool(found) and found[0] is not None

    def _hold_released(self, pool: str, now: float) -> bool:
        """An operator resumed the pool (it left ``paused``) or set an override for it."""
        with self.settings_lock:
            override = self.overrides.get(pool)
            if override is not None and override.active(now):
                if pool in self._hold_paused:
                    self.paused.discard(pool)
                return True
            return pool not in self.paused and "*" not in self.paused

    def _adopt(self, pool: str, target: int) -> None:
        self.external_hold.discard(pool)
        self._hold_paused.discard(pool)
        self._applied[pool] = target
        self._persist(self.recorder.set_applied, pool, target)

    def _forecast(self, now: float, obs: Mapping[str, PoolObservation]) -> dict[str, dict[Signal, Forecast]]:
        out: dict[str, dict[Signal, Forecast]] = {}
        for (pool, sig), fc in self._forecasters.items():
            o = obs[pool]
            value = o.signals.demand(sig) if o.state is DataState.OK else None
            if value is not None:
                self._reported.add((pool, sig))
            elif (pool, sig) not in self._reported:
                continue  # a signal the source has never reported (vLLM exports no KV tokens): nothing to forecast
            t = o.sample_time_s if (o.state is DataState.OK and o.sample_time_s is not None) else now
            try:
                feed_forecaster(fc, sig, o, t, value, self.seasonal.get(pool, sig))
                out.setdefault(pool, {})[sig] = fc.predict(lead_time_s(self.pools[pool].cold_start_s, self.tick_s))
            except Exception as exc:
                log.warning("forecast_failed", pool=pool, signal=sig.value, error=f"{type(exc).__name__}: {exc}")
        return out

    # -- the tick -------------------------------------------------------------------------------
    def live(self, now: float | None = None) -> LiveSettings:
        """One consistent copy of the operator-changeable settings; with ``now``, expired overrides are dropped."""
        with self.settings_lock:
            if now is not None:
                self.overrides = {p: o for p, o in self.overrides.items() if o.active(now)}
            return LiveSettings(
                policy=self.policy,
                policy_params=dict(self.policy_params),
                policy_state=self.policy_state,
                slo=self.slo,
                budget_gpus=self.budget_gpus,
                guard_settings=self.guard_settings,
                overrides=dict(self.overrides),
                paused=frozenset(self.paused),
            )

    def context(
        self,
        now: float,
        observations: Mapping[str, PoolObservation],
        states: Mapping[str, PoolState],
        forecasts: Mapping[str, Mapping[Signal, Forecast]],
        live: LiveSettings | None = None,
    ) -> PolicyContext:
        """The policy's view of this tick (on ``live``, by default a copy taken now)."""
        live = live or self.live()
        return PolicyContext(
            now_s=now,
            tick_s=self.tick_s,
            pools=self.pools,
            states=states,
            observations=observations,
            forecasts=forecasts,
            slo=live.slo,
            budget_gpus=live.budget_gpus,
            capacity=self.capacity,
            supports_role_flip=can_flip_roles(self.actuator),
            state=live.policy_state,
            params=live.policy_params,
            seasonal=self.seasonal.views(),
        )

    def run_once(self, now: float) -> TickResult:
        """Fetch, forecast, decide, guard, actuate and record; never raises for a failing part."""
        started = time.perf_counter()
        with self.lock:
            observations = self._fetch(now)
            states, read_errors = self._states(now)
            forecasts = self._forecast(now, observations)
            live = self.live(now)
            ctx = self.context(now, observations, states, forecasts, live)
            paused = frozenset(live.paused | self.external_hold | set(read_errors))
            if live.budget_gpus is not None and any(p not in self._read_states for p in read_errors):
                # A pool never read by this process has no known spend (after a restart, what it holds may exceed
                # every target on record): nothing may grow until it is read.
                log.warning("budget_unknown_spend", pools=sorted(p for p in read_errors if p not in self._read_states))
                paused = frozenset(self.pools)
            out = decide(
                live.policy,
                DecideInput(
                    ctx=ctx,
                    guard_settings=live.guard_settings,
                    guard_state=self.guard_state,
                    overrides=dict(live.overrides),
                    paused=paused,
                ),
            )
            if out.error is not None:
                log.error("policy_failed", policy=out.decision.policy, error=out.error)
            else:
                with self.settings_lock:
                    if self.policy is live.policy:  # a policy swapped in meanwhile starts from its own empty state
                        self.policy_state = out.policy_state
                self.guard_state = out.guard_state
            rec_id = self.recorder.next_id()
            inputs = inputs_summary(observations, states, forecasts)
            acting = acting_pools(out.decision, states, self.dry_run)
            writable = True
            if acting:  # recorded before any call, so a crash mid-actuation leaves the decision to settle
                pending = {p: PoolOutcome(Outcome.PENDING, "actuation in progress") for p in acting}
                pending_rec = DecisionRecord(id=rec_id, decision=out.decision, inputs=inputs, outcomes=pending)
                writable = self._persist(self.recorder.record, pending_rec)
            outcomes = (
                self._actuate(now, out.decision, states, rec_id, frozenset(read_errors), live.budget_gpus)
                if writable
                else unwritable(acting)
            )
            final = DecisionRecord(id=rec_id, decision=out.decision, inputs=inputs, outcomes=outcomes)
            self._unsaved = [*self._unsaved[-(MAX_UNSAVED - 1) :], final]
            self._flush()
            log_scale_decisions(out.decision, observations, states, forecasts, outcomes, live.slo.quantile)
            result = TickResult(
                now_s=now,
                decision=out.decision,
                observations=observations,
                states=states,
                forecasts=forecasts,
                outcomes=outcomes,
                record_id=rec_id,
                duration_s=time.perf_counter() - started,
            )
            self.last = result
            return result

    def _actuate(
        self,
        now: float,
        decision: Decision,
        states: Mapping[str, PoolState],
        rec_id: int | None = None,
        unread: frozenset[str] = frozenset(),
        budget_gpus: int | None = None,
    ) -> dict[str, PoolOutcome]:
        outcomes: dict[str, PoolOutcome] = {}
        flipped: set[str] = set()
        if decision.held:
            return {p: PoolOutcome(Outcome.HELD, decision.pools[p].reason) for p in decision.pools}
        # A pool whose actuator read failed is not written: its counts are a stale worst case, and a "shrink" from
        # them may be a growth from what the pool really holds (found by tests/controller/test_budget_faults.py).
        for p in unread & set(decision.pools):
            outcomes[p] = PoolOutcome(Outcome.HELD, "actuator read failed this tick")
        # A rebalance's growth counts on its shrinks and flips: when one fails, growth waits (budget worst case).
        stalled = any(decision.pools[p].target < states[p].target for p in unread & set(decision.pools))
        for flip in decision.flips:
            if {flip.from_pool, flip.to_pool} & unread:
                continue
            if self.dry_run:
                outcomes[flip.from_pool] = outcomes[flip.to_pool] = PoolOutcome(Outcome.DRY_RUN, f"flip {flip}")
            elif can_flip_roles(self.actuator):
                before = {"from_before": states[flip.from_pool].target, "to_before": states[flip.to_pool].target}
                spec = {"to_pool": flip.to_pool, "count": flip.count, **before}
                after_from = before["from_before"] - flip.count
                try:
                    intent = self._intent_begin(flip.from_pool, after_from, now, rec_id, IntentKind.FLIP, spec)
                except NoIntent:
                    continue
                try:
                    self.actuator.flip_roles(flip)
                except Exception as exc:
                    cls = exc.error_class if isinstance(exc, ActuationError) else ErrorClass.TRANSIENT
                    log.error("role_flip_failed", flip=str(flip), error=str(exc), error_class=cls.value)
                    stalled = True
                    # Half done, perhaps: until the next read, the receiving pool counts as if all had moved.
                    to = flip.to_pool
                    self._maybe_applied[to] = max(self._maybe_applied.get(to, 0), states[to].target + flip.count)
                    self._intent_failed(intent, flip.from_pool, after_from, now, rec_id, str(exc), spec)
                    continue
                for p, delta in ((flip.from_pool, -flip.count), (flip.to_pool, flip.count)):
                    self._applied[p] = states[p].target + delta
                    self._persist(self.recorder.set_applied, p, self._applied[p])
                    outcomes[p] = PoolOutcome(Outcome.APPLIED, f"role flip {flip.from_pool}->{flip.to_pool}")
                self._intent_end(intent, Outcome.APPLIED.value, "")
            flipped |= {flip.from_pool, flip.to_pool}
        # Shrink before grow, so the budget holds between the two steps of a rebalance.
        order = sorted(decision.pools.values(), key=lambda d: d.target - states[d.pool].target)
        for d in order:
            if d.pool in unread:
                continue
            done_flip = d.pool in flipped and d.pool in outcomes
            ref = self._applied.get(d.pool, states[d.pool].target) if done_flip else states[d.pool].target
            if stalled and budget_gpus is not None and d.target > ref:
                outcomes[d.pool] = PoolOutcome(Outcome.HELD, "a shrink or flip failed this tick; growth waits for it")
                continue
            if done_flip:
                if d.target != self._applied.get(d.pool):
                    outcomes[d.pool] = self._set(now, d.pool, d.target, rec_id)
            elif d.target == states[d.pool].target:
                outcomes[d.pool] = PoolOutcome(Outcome.UNCHANGED)
            else:
                outcomes[d.pool] = self._set(now, d.pool, d.target, rec_id)
            if d.pool in outcomes and d.target < ref and outcomes[d.pool].outcome in (Outcome.FAILED, Outcome.BACKOFF):
                stalled = True
        return outcomes

    def _set(self, now: float, pool: str, target: int, rec_id: int | None = None) -> PoolOutcome:
        if self.dry_run:
            return PoolOutcome(Outcome.DRY_RUN, f"would set {target}")
        if self.backoff.blocked(pool, now):
            return PoolOutcome(Outcome.BACKOFF, f"retry at {self.backoff.retry_at_s[pool]:.0f}s")
        # Crash safety: a recorder with intents (pdscale.controller.runtime.store) persists the call before it is made.
        try:
            intent = self._intent_begin(pool, target, now, rec_id)
        except NoIntent:
            return PoolOutcome(
                Outcome.FAILED, f"state store unwritable: {self.store_error}", ErrorClass.TRANSIENT.value
            )
        try:
            self.actuator.set_target(pool, target)
        except Exception as exc:
            cls = exc.error_class if isinstance(exc, ActuationError) else ErrorClass.TRANSIENT
            delay = self.backoff.failed(pool, now, cls)
            log.error(
                "actuation_failed", pool=pool, target=target, error=str(exc), error_class=cls.value, retry_in_s=delay
            )
            self._intent_failed(intent, pool, target, now, rec_id, str(exc))
            self._maybe_applied[pool] = max(self._maybe_applied.get(pool, 0), target)
            return PoolOutcome(Outcome.FAILED, str(exc), cls.value)
        self.backoff.succeeded(pool)
        drained = take_drain_result(self.actuator, pool)  # what a draining scale-down did, when it says
        held = target + (drained.deferred if drained is not None else 0)  # a deferred rest is ours, done next tick
        self._applied[pool] = held
        self._persist(self.recorder.set_applied, pool, held)
        self._intent_end(intent, Outcome.APPLIED.value, "")
        if drained is not None and drained.timed_out:
            log.warning(
                "drain_timeout", pool=pool, target=target, inflight_cut=drained.cut_inflight, replicas=drained.timed_out
            )
        log.info("actuation_applied", pool=pool, target=target)
        return PoolOutcome(Outcome.APPLIED, drained.summary() if drained is not None else "")


TickHook = Callable[[float], Awaitable[None] | None]
