"""Core types: the signals a pool reports and the demand they give."""

from __future__ import annotations

import math

import pytest

from pdscale.controller.core.types import Signal, Signals


class TestSignals:
    def test_rejects_nan(self) -> None:
        """A NaN signal is refused by name (missing is None, never NaN)."""
        with pytest.raises(ValueError, match="itl_mean_ms"):
            Signals(itl_mean_ms=math.nan)

    def test_concurrency_from_counters(self) -> None:
        """Generated tokens/s x mean ITL (the window's mean running sequences) beats the instant gauge."""
        s = Signals(running_requests=150.0, waiting_requests=5.0, generation_tokens_per_s=3000.0, itl_mean_ms=40.0)
        assert s.demand(Signal.DECODE_CONCURRENCY) == pytest.approx(3000.0 * 0.040 + 5.0)

    def test_concurrency_falls_back_to_gauge(self) -> None:
        """Without the counters the running gauge is the concurrency."""
        assert Signals(running_requests=150.0).demand(Signal.DECODE_CONCURRENCY) == 150.0

    def test_missing_concurrency(self) -> None:
        """No running gauge and no counters: the concurrency is missing, not zero."""
        assert Signals(waiting_requests=3.0).demand(Signal.DECODE_CONCURRENCY) is None
