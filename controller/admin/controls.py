"""Operator controls over a running Reconciler: pause, overrides, policy, SLO and budget.

Every change is validated completely before anything is touched (bad input changes nothing), written to the state
store first (durable when the call returns; a failed write changes nothing), then published to the reconciler
under its ``settings_lock``, never under the tick's lock: a change does not wait for a running tick, and the next
tick decides on it. Changes are serialised among themselves by ``write_lock``. The admin servicer and the daemon's
start-up restore both go through this class.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from pdscale.controller.core.decide import ALL_POOLS
from pdscale.controller.core.protocols import Policy
from pdscale.controller.core.types import SLO, Override, OverrideMode
from pdscale.controller.runtime.loop import Reconciler
from pdscale.controller.runtime.plugins import PluginError, PluginGroup, Registry, UnknownPluginError
from pdscale.controller.runtime.store import SqliteStore

__all__ = ["SOURCE_ADMIN", "SOURCE_FILE", "SOURCE_OVERRIDE", "AdminError", "Controls", "ErrorKind"]

log = structlog.get_logger(__name__)

KEY_POLICY = "policy"
KEY_SLO = "slo"
KEY_BUDGET = "budget"
RUNTIME_KEYS = (KEY_POLICY, KEY_SLO, KEY_BUDGET)
SOURCE_FILE = "file"
"""The value in force is the settings file's."""
SOURCE_ADMIN = "admin"
"""Set over the admin API and kept in the state store: it wins over the file across restarts, until a SIGHUP reload
or ``pdscale serve --reset-runtime-state``."""
SOURCE_OVERRIDE = "override"
"""A pool's replicas are pinned by an admin override (exact, min or max) instead of the file's min/max alone."""
_MAX_REASON = 1024
_MAX_SHOWN = 64
"""Characters of a caller's name echoed back in an error (a 1 MB name is not repeated in full)."""


class ErrorKind(StrEnum):
    """Maps to gRPC status codes in the servicer."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    FAILED_PRECONDITION = "failed_precondition"


class AdminError(ValueError):
    """An operator request was refused; ``kind`` picks the status code and the message says what to fix."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _invalid(message: str) -> AdminError:
    return AdminError(ErrorKind.INVALID_ARGUMENT, message)


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    """A built, validated policy ready to swap in."""

    name: str
    params: dict[str, Any]
    policy: Policy


class Controls:
    """Validated, persisted operator changes to one Reconciler."""

    def __init__(self, reconciler: Reconciler, store: SqliteStore, registry: Registry) -> None:
        self.rec = reconciler
        self.store = store
        self.registry = registry
        self.policy_name: str = getattr(reconciler.policy, "name", type(reconciler.policy).__name__)
        self.pause_reasons: dict[str, str] = {}
        self.runtime_sources: dict[str, str] = dict.fromkeys(RUNTIME_KEYS, SOURCE_FILE)
        """Where the policy, SLO and budget in force come from: ``file`` or ``admin`` (state store)."""
        self.write_lock = threading.RLock()
        """Serialises changes, so the store and the reconciler see them in the same order."""

    # -- validation helpers -----------------------------------------------------------------------------------
    def check_pool(self, pool: str) -> None:
        """NOT_FOUND naming the configured pools when ``pool`` is unknown."""
        if pool not in self.rec.pools:
            known = ", ".join(sorted(self.rec.pools))
            shown = pool if len(pool) <= _MAX_SHOWN else f"{pool[:_MAX_SHOWN]}... ({len(pool)} characters)"
            raise AdminError(ErrorKind.NOT_FOUND, f"unknown pool {shown!r}; configured pools: {known}")

    @staticmethod
    def _check_reason(reason: str) -> None:
        if len(reason) > _MAX_REASON:
            raise _invalid(f"reason is {len(reason)} characters; at most {_MAX_REASON} are allowed")

    # -- pause ------------------------------------------------------------------------------------------------
    def pause(self, pool: str = "", reason: str = "") -> list[str]:
        """Hold one pool (or all with ``""``) at its current target until resumed."""
        self._check_reason(reason)
        if pool:
            self.check_pool(pool)
        key = pool or ALL_POOLS
        with self.write_lock:
            reasons = {**self.pause_reasons, key: reason}
            self.store.set_paused(reasons)
            with self.rec.settings_lock:
                self.pause_reasons = reasons
                self.rec.paused.add(key)
                now_paused = sorted(self.rec.paused)
        log.info("admin_paused", pool=key, reason=reason)
        return now_paused

    def resume(self, pool: str = "") -> list[str]:
        """Resume one pool (or all with ``""``)."""
        if pool:
            self.check_pool(pool)
        with self.write_lock:
            reasons = dict(self.pause_reasons)
            others: list[str] = []  # pools still held when one is resumed out of "all paused"
            if not pool:
                reasons.clear()
            else:
                if ALL_POOLS in self.rec.paused:  # only changes under write_lock
                    why = reasons.pop(ALL_POOLS, "")
                    others = [p for p in self.rec.pools if p != pool]
                    for other in others:
                        reasons.setdefault(other, why)
                reasons.pop(pool, None)
            self.store.set_paused(reasons)
            with self.rec.settings_lock:
                self.pause_reasons = reasons
                if not pool:
                    self.rec.paused.clear()
                else:
                    if others:
                        self.rec.paused.discard(ALL_POOLS)
                        self.rec.paused.update(others)
                    self.rec.paused.discard(pool)
                now_paused = sorted(self.rec.paused)
        log.info("admin_resumed", pool=pool or ALL_POOLS)
        return now_paused

    # -- overrides --------------------------------------------------------------------------------------------
    def set_override(
        self, pool: str, mode: OverrideMode | None, replicas: int, ttl_s: float | None, now_s: float, reason: str = ""
    ) -> Override:
        """Pin ``pool`` (exact, min or max), expiring ``ttl_s`` seconds of loop clock from ``now_s`` if given."""
        self.check_pool(pool)
        self._check_reason(reason)
        if mode is None:
            raise _invalid("mode is required: exact, min or max")
        spec = self.rec.pools[pool]
        if not spec.min_replicas <= replicas <= spec.max_replicas:
            raise _invalid(
                f"replicas {replicas} is outside pool {pool!r} bounds [{spec.min_replicas}, {spec.max_replicas}]; "
                "change min_replicas/max_replicas in the settings file to go beyond them"
            )
        if ttl_s is not None and not (math.isfinite(ttl_s) and ttl_s > 0):
            raise _invalid(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
        override = Override(
            pool=pool, mode=mode, replicas=replicas, expires_s=None if ttl_s is None else now_s + ttl_s, reason=reason
        )
        with self.write_lock:
            self.store.save_override(override)
            with self.rec.settings_lock:
                self.rec.overrides[pool] = override
        log.info("admin_override_set", pool=pool, mode=mode.value, replicas=replicas, expires_s=override.expires_s)
        return override

    def clear_override(self, pool: str) -> bool:
        """Remove ``pool``'s override; whether there was one."""
        self.check_pool(pool)
        with self.write_lock:
            had = self.store.delete_override(pool)
            with self.rec.settings_lock:
                had = self.rec.overrides.pop(pool, None) is not None or had
        log.info("admin_override_cleared", pool=pool, had=had)
        return had

    # -- policy, SLO, budget ----------------------------------------------------------------------------------
    def build_policy(self, name: str, params: Mapping[str, Any]) -> PolicyChoice:
        """Build (and so validate) a policy plugin without installing it."""
        if not name:
            raise _invalid("policy name is required; list them with ListPlugins")
        try:
            policy: Policy = self.registry.create(PluginGroup.POLICIES, name, dict(params))
        except UnknownPluginError as exc:
            raise AdminError(ErrorKind.NOT_FOUND, str(exc)) from None
        except PluginError as exc:
            raise _invalid(str(exc)) from None
        except Exception as exc:
            raise _invalid(f"policy {name!r} rejected its parameters: {type(exc).__name__}: {exc}") from None
        return PolicyChoice(name=name, params=dict(params), policy=policy)

    def set_policy(self, name: str, params: Mapping[str, Any], *, persist: bool = True) -> PolicyChoice:
        """Swap the policy (its own state starts empty)."""
        choice = self.build_policy(name, params)
        with self.write_lock:
            if persist:
                self.store.set_value(KEY_POLICY, {"name": name, "params": choice.params})
            self.runtime_sources[KEY_POLICY] = SOURCE_ADMIN
            with self.rec.settings_lock:
                self.rec.policy = choice.policy
                self.rec.policy_params = dict(choice.params)
                self.rec.policy_state = {}
                self.policy_name = name
        log.info("admin_policy_set", policy=name, params=choice.params)
        return choice

    def make_slo(self, ttft_ms: float | None = None, itl_ms: float | None = None, quantile: float | None = None) -> SLO:
        """The current SLO with the given fields replaced, validated."""
        cur = self.rec.slo
        for field, value in (("ttft_ms", ttft_ms), ("itl_ms", itl_ms), ("quantile", quantile)):
            if value is not None and not math.isfinite(value):
                raise _invalid(f"{field} must be a finite number, got {value!r}")
        try:
            return SLO(
                ttft_ms=cur.ttft_ms if ttft_ms is None else ttft_ms,
                itl_ms=cur.itl_ms if itl_ms is None else itl_ms,
                quantile=cur.quantile if quantile is None else quantile,
            )
        except ValueError as exc:
            raise _invalid(str(exc)) from None

    def update_slo(
        self, ttft_ms: float | None = None, itl_ms: float | None = None, quantile: float | None = None
    ) -> SLO:
        """Change latency targets (unset fields keep their value)."""
        if ttft_ms is None and itl_ms is None and quantile is None:
            raise _invalid("nothing to update: set ttft_ms, itl_ms or quantile")
        with self.write_lock:  # read-modify-write of the SLO: two changes to different fields both count
            slo = self.make_slo(ttft_ms, itl_ms, quantile)
            self.store.set_value(KEY_SLO, {"ttft_ms": slo.ttft_ms, "itl_ms": slo.itl_ms, "quantile": slo.quantile})
            self.runtime_sources[KEY_SLO] = SOURCE_ADMIN
            with self.rec.settings_lock:
                self.rec.slo = slo
        log.info("admin_slo_set", ttft_ms=slo.ttft_ms, itl_ms=slo.itl_ms, quantile=slo.quantile)
        return slo

    def check_budget(self, max_gpus: int | None) -> int | None:
        """Validate a budget against the pools' minimum footprint."""
        if max_gpus is None:
            return None
        floor = sum(p.min_replicas * p.gpus_per_replica for p in self.rec.pools.values())
        if max_gpus < 1 or max_gpus < floor:
            raise _invalid(f"max_gpus {max_gpus} is below the pools' minimum footprint of {floor} GPUs")
        return max_gpus

    def update_budget(self, max_gpus: int | None) -> int | None:
        """Change (or remove, with None) the GPU budget."""
        budget = self.check_budget(max_gpus)
        with self.write_lock:
            self.store.set_value(KEY_BUDGET, {"max_gpus": budget})
            self.runtime_sources[KEY_BUDGET] = SOURCE_ADMIN
            with self.rec.settings_lock:
                self.rec.budget_gpus = budget
        log.info("admin_budget_set", max_gpus=budget)
        return budget

    # -- restart ----------------------------------------------------------------------------------------------
    def restore(self) -> None:
        """Re-apply persisted pause state, overrides and runtime policy/SLO/budget changes after a restart.

        A persisted value that no longer validates against the current settings is dropped with a warning.
        """
        self.pause_reasons = {p: r for p, r in self.store.paused().items() if p == ALL_POOLS or p in self.rec.pools}
        stored = self.store.overrides()
        with self.write_lock, self.rec.settings_lock:  # the settings lock is never held across a store call
            self.rec.paused = set(self.pause_reasons)
            for pool, o in stored.items():
                if pool in self.rec.pools:
                    self.rec.overrides[pool] = o
        policy = self.store.get_value(KEY_POLICY)
        slo = self.store.get_value(KEY_SLO)
        budget = self.store.get_value(KEY_BUDGET)
        try:
            if policy is not None:
                self.set_policy(str(policy["name"]), dict(policy["params"]), persist=False)
            if slo is not None:
                self.rec.slo = self.make_slo(slo["ttft_ms"], slo["itl_ms"], slo["quantile"])
                self.runtime_sources[KEY_SLO] = SOURCE_ADMIN
            if budget is not None:
                self.rec.budget_gpus = self.check_budget(budget["max_gpus"])
                self.runtime_sources[KEY_BUDGET] = SOURCE_ADMIN
        except (AdminError, KeyError, TypeError) as exc:
            log.warning("state_restore_skipped", error=str(exc))
        # What the state file holds over the settings file: the SLO and budget too, so a restart says it.
        from_state = [k for k, v in ((KEY_POLICY, policy), (KEY_SLO, slo), (KEY_BUDGET, budget)) if v is not None]
        log.info(
            "state_restored",
            paused=sorted(self.rec.paused),
            overrides=sorted(self.rec.overrides),
            policy=self.policy_name,
            slo={"ttft_ms": self.rec.slo.ttft_ms, "itl_ms": self.rec.slo.itl_ms, "quantile": self.rec.slo.quantile},
            budget_gpus=self.rec.budget_gpus,
            from_state=from_state,
            hint="pdscale serve --reset-runtime-state returns to the settings file" if from_state else None,
        )

    def forget_runtime_changes(self) -> None:
        """Drop persisted policy/SLO/budget changes (a config reload makes the file authoritative again)."""
        self.store.delete_values(RUNTIME_KEYS)
        self.runtime_sources = dict.fromkeys(RUNTIME_KEYS, SOURCE_FILE)

    def status_sources(self) -> dict[str, str]:
        """GetStatus's field -> source for the daemon-wide runtime fields."""
        src = self.runtime_sources
        return {
            "policy": src[KEY_POLICY],
            "policy_params": src[KEY_POLICY],
            "slo": src[KEY_SLO],
            "budget_gpus": src[KEY_BUDGET],
            "paused_all": SOURCE_ADMIN if ALL_POOLS in self.rec.paused else SOURCE_FILE,
        }

    def pool_sources(self, pool: str) -> dict[str, str]:
        """GetStatus's field -> source for one pool: its replica limits (file or an override) and pause."""
        paused = pool in self.rec.paused or ALL_POOLS in self.rec.paused
        return {
            "replicas": SOURCE_OVERRIDE if pool in self.rec.overrides else SOURCE_FILE,
            "paused": SOURCE_ADMIN if paused else SOURCE_FILE,
        }
