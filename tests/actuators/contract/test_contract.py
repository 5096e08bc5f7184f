"""The Actuator contract, run against every actuator over a live backend (see conftest.py)."""

from __future__ import annotations

import pytest

from pdscale.controller.core.protocols import (
    ActuationError,
    Actuator,
    SupportsCancelPending,
    SupportsDrain,
    SupportsRoleFlip,
    can_cancel_pending,
    can_drain,
    can_flip_roles,
)
from pdscale.controller.core.types import ErrorClass, ReplicaState
from tests.actuators.contract.conftest import Backend


def _active(backend: Backend, pool: str) -> int:
    return sum(1 for r in backend.actuator.replicas(pool) if r.state in (ReplicaState.READY, ReplicaState.STARTING))


class TestContract:
    def test_is_an_actuator(self, backend: Backend) -> None:
        """It satisfies the Actuator protocol."""
        assert isinstance(backend.actuator, Actuator)

    def test_set_then_get_target(self, backend: Backend) -> None:
        """target_size reports the target just set."""
        pool = backend.pools[0]
        backend.actuator.set_target(pool, 3)
        assert backend.actuator.target_size(pool) == 3

    def test_same_target_twice_is_one_change(self, backend: Backend) -> None:
        """A repeated target changes nothing in the backend."""
        pool = backend.pools[0]
        backend.actuator.set_target(pool, 3)
        before = backend.revision(pool)
        backend.actuator.set_target(pool, 3)
        assert backend.revision(pool) == before

    def test_scale_down_then_up(self, backend: Backend) -> None:
        """Down to 1 then up to 3: the backend ends with 3 active replicas and target 3."""
        pool = backend.pools[0]
        backend.actuator.set_target(pool, 1)
        backend.settle(pool, 1)
        assert _active(backend, pool) == 1
        backend.actuator.set_target(pool, 3)
        backend.settle(pool, 3)
        assert backend.actuator.target_size(pool) == 3
        assert _active(backend, pool) == 3

    def test_replicas_carry_pool_and_state(self, backend: Backend) -> None:
        """Settled replicas are ready, belong to the pool, and have unique ids."""
        pool = backend.pools[1]
        backend.actuator.set_target(pool, 2)
        backend.settle(pool, 2)
        reps = list(backend.actuator.replicas(pool))
        assert [r.state for r in reps] == [ReplicaState.READY] * 2
        assert {r.pool for r in reps} == {pool}
        assert len({r.id for r in reps}) == 2

    def test_dry_run_changes_nothing(self, backend: Backend) -> None:
        """Every actuator has a dry-run mode that reads real state and changes nothing."""
        assert backend.dry_run is not None, f"{backend.name} has no dry-run mode"
        pool = backend.pools[0]
        before_target, before = backend.actuator.target_size(pool), backend.revision(pool)
        dry = backend.dry_run()
        assert dry.target_size(pool) == before_target
        dry.set_target(pool, before_target + 2)
        assert backend.revision(pool) == before
        assert backend.actuator.target_size(pool) == before_target

    @pytest.mark.parametrize("op", ["target_size", "set_target", "replicas"])
    def test_unknown_pool_is_permanent(self, backend: Backend, op: str) -> None:
        """Every call on a pool the actuator does not know fails permanently."""
        call = getattr(backend.actuator, op)
        with pytest.raises(ActuationError) as err:
            call("no-such-pool", 1) if op == "set_target" else call("no-such-pool")
        assert err.value.error_class is ErrorClass.PERMANENT

    def test_negative_target_is_permanent(self, backend: Backend) -> None:
        """A negative target is refused permanently."""
        with pytest.raises(ActuationError) as err:
            backend.actuator.set_target(backend.pools[0], -1)
        assert err.value.error_class is ErrorClass.PERMANENT

    def test_capability_guards_match_methods(self, backend: Backend) -> None:
        """The TypeGuards, the runtime protocols and the declared capabilities agree."""
        act = backend.actuator
        found = {
            name
            for name, guard, proto in (
                ("flip_roles", can_flip_roles, SupportsRoleFlip),
                ("drain", can_drain, SupportsDrain),
                ("cancel_pending", can_cancel_pending, SupportsCancelPending),
            )
            if guard(act) and isinstance(act, proto)
        }
        assert found == backend.capabilities
