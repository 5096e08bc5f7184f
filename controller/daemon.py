"""The pdscale daemon: control loop + admin API + own telemetry, over a SQLite state store.

Start-up order: open the store; build the Reconciler (``pdscale.controller.runtime.assembly.build``) with the store
as its recorder; settle actuation intents a crash left open (never repeating a call); restore pause state,
overrides and runtime policy/SLO/budget changes; start the admin server and /metrics; tick until SIGTERM/SIGINT,
which finish the current tick, persist and exit 0. SIGHUP reloads the settings file: a bad file keeps the running
settings and logs why.

With ``leader_election`` on (pdscale.controller.runtime.leader), a daemon starts as a standby: it opens the state
file for reading, serves the admin API (reads answer and name the leader; writes are refused) and runs no tick.
When it wins the election it takes over: claims the state file, settles the intents the previous leader left
open, restores pause state, overrides, runtime changes and policy state, then ticks. A leader that loses the
election stops ticking before its next tick, and every write to the cluster is checked against the leadership
at the moment it is made (``FencedActuator``).

With the embedded simulator the loop runs on the simulator's clock, ``speedup`` times faster than wall time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from pdscale.controller.admin.controls import AdminError, Controls
from pdscale.controller.admin.hub import DecisionHub
from pdscale.controller.admin.server import AdminServer, start_admin_server
from pdscale.controller.admin.servicer import AdminServicer, RuntimeView
from pdscale.controller.core.protocols import Actuator, MetricsSource
from pdscale.controller.runtime.assembly import build, validate_plugins
from pdscale.controller.runtime.backfill import backfill_seasonal
from pdscale.controller.runtime.intents import reconcile_intents, resume_interrupted
from pdscale.controller.runtime.leader import (
    Elector,
    FencedActuator,
    LeaderStatus,
    Role,
    build_elector,
    default_identity,
    run_election,
)
from pdscale.controller.runtime.loop import TickResult
from pdscale.controller.runtime.plugins import PluginEnv, PluginError, Registry
from pdscale.controller.runtime.record import DecisionRecord
from pdscale.controller.runtime.runner import Runner
from pdscale.controller.runtime.settings import (
    LeaderElectionMode,
    Settings,
    SettingsError,
    load_settings,
)
from pdscale.controller.runtime.store import IntentResolution, SqliteStore, StoreError
from pdscale.controller.runtime.telemetry import Telemetry, TelemetryServer

__all__ = ["LIVE_SECTIONS", "Daemon"]

log = structlog.get_logger(__name__)

KEY_POLICY_STATE = "policy_state"
LIVE_SECTIONS = ("slo", "budget", "policy", "guards")
"""Sections a SIGHUP reload applies in place; a change elsewhere is logged as needing a restart."""
_RESTART_SECTIONS = (
    "model",
    "tick_s",
    "pools",
    "forecasting",
    "metrics",
    "actuator",
    "capacity",
    "simulator",
    "admin",
    "telemetry",
    "state",
    "leader_election",
)


class Daemon:
    """One running pdscale: build with settings, then ``await run()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: str | Path | None = None,
        registry: Registry | None = None,
        env: PluginEnv | None = None,
        source: MetricsSource | None = None,
        actuator: Actuator | None = None,
        clock: Callable[[], float] | None = None,
        max_ticks: int | None = None,
        wall_per_tick_s: float | None = None,
        on_tick: Callable[[TickResult], Any] | None = None,
        elector: Elector | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = Path(config_path) if config_path is not None else None
        self.registry = registry or Registry()
        self.env = env or PluginEnv()
        st = settings.state
        self.env.resources.setdefault("state_path", str(st.path))  # actuators keep their own small files beside it
        le = settings.leader_election
        electing = le.mode is not LeaderElectionMode.OFF
        self.store = SqliteStore(
            st.path,
            retention_days=st.retention_days,
            max_decisions=st.max_decisions,
            exclusive=not electing,
            shared=electing,
        )
        self.assembly = build(
            settings,
            registry=self.registry,
            env=self.env,
            recorder=self.store,
            source=source,
            actuator=actuator,
            fits=settings.forecasting.fits,
        )
        self.rec = self.assembly.reconciler
        self.actuator = self.rec.actuator
        """The actuator itself (``rec.actuator`` is it behind the leadership fence when electing)."""
        self.elector: Elector | None = None
        self._active = not electing
        self._identity = le.identity or default_identity()
        self.intent_resolutions: list[IntentResolution] = []
        if electing:
            # A standby must not settle intents: the leader may be in the middle of those calls.
            self.elector = elector or build_elector(le, st.path)
            self._identity = self.elector.identity
            self.rec.actuator = FencedActuator(self.actuator, self._may_actuate, lambda: self.leader_status().leader)
        else:
            resume_interrupted(self.actuator, dry_run=settings.actuator.dry_run)
            self.intent_resolutions = reconcile_intents(self.store, self.actuator)
        self.rec.reload_applied()
        self.controls = Controls(self.rec, self.store, self.registry)
        self.controls.restore()
        saved = self.store.get_value(KEY_POLICY_STATE)
        if isinstance(saved, dict) and saved.get("policy") == self.controls.policy_name:
            self.rec.policy_state = dict(saved.get("state") or {})
        if self.env.resources.get("simulator") is None:  # simulated time has no past to read back
            backfill_seasonal(self.rec, (clock or time.time)(), settings.forecasting.backfill_days)
        self.telemetry = Telemetry()
        self.telemetry.leader.set(int(self._active))
        self.hub = DecisionHub()
        self.on_tick = on_tick
        self.max_ticks = max_ticks
        self.cluster: Any = self.env.resources.get("simulator")
        self._sim_lock: Any = self.env.resources.get("simulator_lock")
        self.wall_per_tick_s = wall_per_tick_s
        if clock is not None:
            self.clock = clock
        elif self.cluster is not None:
            self.clock = lambda: float(self.cluster.now_s)
            if wall_per_tick_s is None:
                self.wall_per_tick_s = settings.tick_s / settings.simulator.speedup
        else:
            self.clock = time.time
        self.view = RuntimeView(
            clock=self.clock,
            model=settings.model,
            ready=lambda: self.telemetry.ready,
            ticks=lambda: self.telemetry.ticks,
            attainment=self.telemetry.slo_tracker.ratio,
            leadership=self.leader_status,
        )
        self.servicer = AdminServicer(self.controls, self.view, self.hub)
        self.runner: Runner | None = None
        self.admin: AdminServer | None = None
        self.telemetry_server: TelemetryServer | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._bg: set[asyncio.Task[Any]] = set()
        self._election_stop = asyncio.Event()
        self.takeovers = 0
        self.started = asyncio.Event()

    # -- leadership -----------------------------------------------------------------------------------------
    def _may_actuate(self) -> bool:
        return self._active and (self.elector is None or self.elector.is_leader())

    def leader_status(self) -> LeaderStatus:
        """Role, identity and leader for the admin API: ``leader`` only once this daemon has taken over."""
        if self.elector is None:
            return LeaderStatus(Role.SINGLE, self._identity, self._identity)
        st = self.elector.status()
        if self._may_actuate():
            return LeaderStatus(Role.LEADER, st.identity, st.identity, st.transitions)
        leader = "" if st.leader == st.identity else st.leader
        return LeaderStatus(Role.STANDBY, st.identity, leader, st.transitions)

    def _take_over(self) -> bool:
        """Resume from the state store as the new leader; False while the state file is still held."""
        mode = self.settings.leader_election.mode
        if mode is LeaderElectionMode.LEASE:  # in file mode the elector's lock is the state file's lock
            try:
                self.store.claim(holder=self._identity)
            except StoreError as exc:
                log.warning("leader_waiting_for_state_file", identity=self._identity, error=str(exc))
                return False
        self.store.reload_ids()
        resume_interrupted(self.actuator, dry_run=self.settings.actuator.dry_run)
        self.intent_resolutions = reconcile_intents(self.store, self.actuator)
        with self.rec.lock:
            with self.rec.settings_lock:
                self.rec.overrides = {}
            self.rec.reload_applied()
        self.controls.restore()
        saved = self.store.get_value(KEY_POLICY_STATE)
        if isinstance(saved, dict) and saved.get("policy") == self.controls.policy_name:
            self.rec.policy_state = dict(saved.get("state") or {})
        self._active = True
        self.takeovers += 1
        log.info("leader_took_over", identity=self._identity, settled_intents=len(self.intent_resolutions))
        return True

    def _step_down(self) -> None:
        self._active = False
        if self.settings.leader_election.mode is LeaderElectionMode.LEASE:
            self.store.release_claim()
        log.warning("leader_stepped_down", identity=self._identity, reason="leadership lapsed; not actuating")

    async def _gate(self) -> bool:
        """Asked by the runner before each tick: tick only as the leader that has taken over."""
        assert self.elector is not None
        leader = self.elector.is_leader()
        if leader and not self._active:
            await asyncio.to_thread(self._take_over)
        elif not leader and self._active:
            self._step_down()
        actuating = self._may_actuate()
        self.telemetry.leader.set(int(actuating))
        return actuating

    def ready(self) -> bool:
        """For /readyz: a tick has completed, the state store takes writes and has not been found damaged."""
        return self.telemetry.ready and self.rec.store_error is None and self.store.damaged is None

    # -- hooks around each tick ---------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        if self._sim_lock is not None:
            with self._sim_lock:
                self.cluster.advance_to(now)
        else:
            self.cluster.advance_to(now)

    async def _before_tick(self, now: float) -> None:
        if self.cluster is not None:
            await asyncio.to_thread(self._advance, now)

    def _after_tick(self, result: TickResult) -> None:
        self.telemetry.observe(result, self.rec)
        self.hub.publish(DecisionRecord(id=result.record_id, decision=result.decision, outcomes=result.outcomes))
        try:
            self.store.set_value(
                KEY_POLICY_STATE, {"policy": self.controls.policy_name, "state": dict(self.rec.policy_state)}
            )
        except Exception as exc:  # not JSON-able, or the store is failing (the loop reports that once)
            log.debug("policy_state_not_persisted", error=str(exc))
        if self.on_tick is not None:
            self.on_tick(result)

    # -- SIGHUP ---------------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """Re-read the settings file and apply its live sections; a bad file changes nothing. Thread-safe."""
        if self.config_path is None:
            log.warning("config_reload_unavailable", reason="the daemon was not started from a settings file")
            return False
        try:
            new = load_settings(self.config_path)
            validate_plugins(new, self.registry)
            if [p.name for p in new.pools] != [p.name for p in self.settings.pools]:
                raise SettingsError(f"{self.config_path}: pools: adding or removing pools needs a restart")
            choice = self.controls.build_policy(new.policy.name, new.policy.params)
            slo = new.slo.to_slo()
            guards = new.guards.to_guard_settings()
            budget = self.controls.check_budget(new.budget.max_gpus)
        except (SettingsError, PluginError, AdminError, ValueError) as exc:
            self.reload_failures += 1
            log.error("config_reload_rejected", path=str(self.config_path), error=str(exc), kept="running settings")
            return False
        restart = [s for s in _RESTART_SECTIONS if getattr(new, s) != getattr(self.settings, s)]
        policy_changed = (new.policy.name, new.policy.params) != (self.controls.policy_name, self.rec.policy_params)
        with self.controls.write_lock:  # never waits for a running tick
            self.controls.forget_runtime_changes()
            with self.rec.settings_lock:
                if policy_changed:
                    self.rec.policy, self.rec.policy_params, self.rec.policy_state = choice.policy, choice.params, {}
                    self.controls.policy_name = choice.name
                self.rec.slo = slo
                self.rec.guard_settings = guards
                self.rec.budget_gpus = budget
        self.settings = new
        self.reloads += 1
        log.info("config_reloaded", path=str(self.config_path), policy=new.policy.name, restart_needed=restart)
        return True

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.reload), name="config-reload")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the current tick, then shut down."""
        if self.runner is not None:
            self.runner.stop()

    async def run(self, *, install_signals: bool = True) -> int:
        """Serve until stopped; returns the exit code (0 on a clean stop)."""
        s = self.settings
        self.runner = Runner(
            self.rec,
            tick_s=s.tick_s,
            clock=self.clock,
            before_tick=self._before_tick,
            after_tick=self._after_tick,
            max_ticks=self.max_ticks,
            wall_per_tick_s=self.wall_per_tick_s,
            gate=self._gate if self.elector is not None else None,
            gate_poll_s=self.elector.retry_period_s / 4 if self.elector is not None else 1.0,
        )
        try:
            if self.elector is not None:
                self.runner.spawn("leader-election", run_election(self.elector, self._election_stop))
            if s.telemetry.enabled:
                self.telemetry_server = TelemetryServer(self.telemetry, s.telemetry.listen, self.ready).start()
            if s.admin.enabled:
                self.admin = await start_admin_server(self.servicer, s.admin)
            if install_signals:
                self.runner.install_signal_handlers(reload=self._on_sighup)
            log.info(
                "daemon_started",
                pools=sorted(self.rec.pools),
                policy=self.controls.policy_name,
                admin=self.admin.address if self.admin else None,
                telemetry_port=self.telemetry_server.port if self.telemetry_server else None,
                state=str(s.state.path) if s.state.path else "memory",
                settled_intents=len(self.intent_resolutions),
                role=self.leader_status().role.value,
                identity=self._identity,
            )
            self.started.set()
            return await self.runner.run()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self.telemetry.up.set(0)
        self.telemetry.leader.set(0)
        if self.elector is not None:  # no tick runs any more: hand the leadership over without waiting for expiry
            self._election_stop.set()
            self._active = False
            await asyncio.to_thread(self.elector.release)
        if self.admin is not None:
            await self.admin.stop(grace_s=1.0)
        if self.telemetry_server is not None:
            self.telemetry_server.stop()
        for task in list(self._bg):
            task.cancel()
        try:
            self.rec.source.close()
        except Exception as exc:
            log.warning("source_close_failed", error=str(exc))
        self.store.close()
        log.info("daemon_stopped", ticks=self.telemetry.ticks)
