"""The slo policy's seasonal floor: a quiet hour is not the new normal when history says the load returns."""

from __future__ import annotations

from dataclasses import replace

from pdscale.controller.core.protocols import PolicyContext
from pdscale.controller.core.types import Forecast, Signal
from pdscale.controller.policies.slo import SloPolicy
from pdscale.forecasting.seasonal import DAY_S, SeasonalHistory
from tests.controller.test_policies import ctx

NOW = 2 * DAY_S
QUIET = {Signal.REQUEST_RATE: 1.0, Signal.PREFILL_TPS: 1000.0, Signal.DECODE_CONCURRENCY: 10.0}
"""The ctx() helper's signals at rate 1, conc 10 (prompts of 1,000 tokens)."""
RETURN = 20.0
"""History's load after the return, as a multiple of the quiet level."""


def _history(sig: Signal, back_at_s: float) -> SeasonalHistory:
    """Yesterday: the quiet level until ``back_at_s`` (today's clock minus a day), RETURN times it after; today:
    the quiet level over the last hour."""
    h = SeasonalHistory()
    quiet = QUIET[sig]
    for t in range(int(NOW - DAY_S - 3600), int(NOW - DAY_S + 3600), 30):
        h.observe(float(t), quiet * (RETURN if t >= back_at_s - DAY_S else 1.0))
    for t in range(int(NOW - 3600), int(NOW) + 1, 30):
        h.observe(float(t), quiet)
    return h


def _seasonal_ctx(back_in_s: float) -> PolicyContext:
    """The quiet context at NOW, with yesterday's load returning ``back_in_s`` after NOW's clock time."""
    c = ctx(now=NOW, rate=1.0, conc=10.0)
    hist = {
        pool: {sig: _history(sig, NOW + back_in_s) for sig in sigs}
        for pool, sigs in (
            ("prefill", (Signal.PREFILL_TPS, Signal.REQUEST_RATE)),
            ("decode", (Signal.DECODE_CONCURRENCY, Signal.REQUEST_RATE)),
        )
    }
    return replace(c, seasonal=hist)


def _back_now() -> PolicyContext:
    """The load already back at RETURN times the quiet level, forecast flat at it (no quantile spread)."""
    c = ctx(now=NOW, rate=RETURN, conc=10.0 * RETURN)
    flat = {
        pool: {sig: Forecast(mean=f.mean, quantiles=dict.fromkeys((0.5, 0.9, 0.99), f.mean)) for sig, f in fcs.items()}
        for pool, fcs in c.forecasts.items()
    }
    return replace(c, forecasts=flat)


def _policy(**params: object) -> SloPolicy:
    return SloPolicy({"measure_arrival_cv2": False, "learn_decode_shape": False, **params})


class TestSeasonalFloorInSlo:
    def test_return_within_the_lead_time_is_prescaled(self) -> None:
        """Yesterday the load came back 60 s from now (lead 90 s): both pools are sized as if it were back."""
        quiet = _policy().decide(ctx(now=NOW, rate=1.0, conc=10.0))
        back = _policy().decide(_seasonal_ctx(60.0))
        loud = _policy().decide(_back_now())
        assert back.targets["decode"] == loud.targets["decode"] > quiet.targets["decode"]
        assert back.targets["prefill"] == loud.targets["prefill"] > quiet.targets["prefill"]

    def test_return_past_the_lead_time_waits(self) -> None:
        """Yesterday's return came 20 minutes from now, far past the 90 s lead: nothing is bought yet."""
        quiet = _policy().decide(ctx(now=NOW, rate=1.0, conc=10.0))
        later = _policy().decide(_seasonal_ctx(1200.0))
        assert later.targets == quiet.targets

    def test_reason_and_estimates_show_the_floor(self) -> None:
        """The decode reason names the floor and the lag; the estimates carry the floor and the came-back ratio."""
        p = _policy().decide(_seasonal_ctx(60.0))
        assert "seasonal floor in 90 s: decode_concurrency 12 -> 200 (1d ago 200 x1.00)" in p.reasons["decode"]
        assert p.estimates["decode"]["seasonal_floor_decode_concurrency"] == 200.0
        assert p.estimates["decode"]["seasonal_ratio"] == 1.0

    def test_floor_can_be_turned_off(self) -> None:
        """seasonal_floor: false sizes the quiet hour as it is."""
        quiet = _policy().decide(ctx(now=NOW, rate=1.0, conc=10.0))
        off = _policy(seasonal_floor=False).decide(_seasonal_ctx(60.0))
        assert off.targets == quiet.targets
        assert "seasonal" not in off.reasons["decode"]
