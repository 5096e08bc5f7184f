"""The write fence: an actuator wrapper that refuses cluster-changing calls unless this daemon leads now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pdscale.controller.core.protocols import ActuationError, Actuator
from pdscale.controller.core.types import ErrorClass, ReplicaInfo

__all__ = ["FencedActuator"]


class FencedActuator:
    """An actuator whose cluster-changing calls are refused unless ``allowed()`` holds at the moment of the call.

    Reads pass through. The check is made immediately before each write, so a tick that began while leading
    cannot write after the leadership lapsed mid-tick.
    """

    _WRITES = frozenset({"flip_roles", "drain", "cancel_pending", "resume_pending"})

    def __init__(self, inner: Actuator, allowed: Callable[[], bool], who: Callable[[], str]) -> None:
        self.inner = inner
        self.allowed = allowed
        self.who = who

    def _check(self, op: str, pool: str) -> None:
        if not self.allowed():
            raise ActuationError(
                f"{op} {pool}: refused, this daemon is not the leader (leader: {self.who() or 'none known'})",
                ErrorClass.TRANSIENT,
            )

    def target_size(self, pool: str) -> int:
        """As the wrapped actuator."""
        return self.inner.target_size(pool)

    def replicas(self, pool: str) -> list[ReplicaInfo]:
        """As the wrapped actuator."""
        return list(self.inner.replicas(pool))

    def set_target(self, pool: str, replicas: int) -> None:
        """Only while leading."""
        self._check("set_target", pool)
        self.inner.set_target(pool, replicas)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self._WRITES or not callable(attr):
            return attr

        def fenced(*args: Any, **kwargs: Any) -> Any:
            self._check(name, str(args[0]) if args else "")
            return attr(*args, **kwargs)

        return fenced
