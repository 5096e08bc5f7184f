"""Core types to admin protobufs: one absurd value must not poison every later admin call."""

from __future__ import annotations

import pytest

from pdscale.controller.admin.convert import decision_to_pb, forecast_to_pb
from pdscale.controller.core.types import Decision, PoolDecision, Signal
from pdscale.controller.policies.static import StaticPolicy
from pdscale.controller.runtime.record import DecisionRecord
from pdscale.forecasting.base import Forecast


def test_out_of_range_proposal_saturates_instead_of_failing() -> None:
    """A proposal of 3e9 replicas (past int32) serialises as int32's maximum; the record stays readable."""
    pool = PoolDecision(pool="prefill", previous=2, proposed=3_000_000_000, target=8, reason="plugin bug")
    rec = DecisionRecord(id=1, decision=Decision(time_s=0.0, policy="p", pools={"prefill": pool}))
    msg = decision_to_pb(rec)
    assert msg.pools[0].proposed == 2**31 - 1
    assert msg.pools[0].target == 8


def test_static_policy_refuses_an_absurd_count() -> None:
    """`admin policy static --params '{"replicas": {"prefill": 3000000000}}'` is refused, naming the field."""
    with pytest.raises(ValueError, match=r"replicas\.prefill"):
        StaticPolicy({"replicas": {"prefill": 3_000_000_000}})


def test_forecast_carries_its_note() -> None:
    """A forecast's note (a fallback, a band restarted by a level shift) reaches `admin forecast`."""
    fc = Forecast(310.0, {0.5: 310.0, 0.9: 330.0}, True, "last_value", 330.0, "band restarted by a level shift")
    assert forecast_to_pb(Signal.DECODE_CONCURRENCY, fc).note == "band restarted by a level shift"
