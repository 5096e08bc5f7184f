"""The slo policy's measured inputs: the SLO feedback margin and the arrival index of dispersion."""

from __future__ import annotations

import numpy as np
import pytest

from pdscale.controller.policies.dispersion import Dispersion
from pdscale.controller.policies.feedback import Margin, update_margin

STEP = {"step": 0.15, "half_life_s": 1800.0, "max_factor": 2.0, "lead_time_s": 330.0}


class TestMargin:
    def test_violation_steps_up(self) -> None:
        """A pool over its latency target gets a margin one step above 1."""
        m = update_margin(Margin(), now_s=100.0, violated=True, **STEP)
        assert m.factor == pytest.approx(1.15)
        assert m.raised_at_s == 100.0

    def test_one_step_per_lead_time(self) -> None:
        """Capacity bought by a step cannot arrive before the lead time: no second step before it."""
        m = update_margin(Margin(), now_s=100.0, violated=True, **STEP)
        m = update_margin(m, now_s=130.0, violated=True, **STEP)
        assert m.factor == pytest.approx(1.15, rel=1e-2)
        m = update_margin(m, now_s=430.0, violated=True, **STEP)
        assert m.factor > 1.3

    def test_decays_with_half_life(self) -> None:
        """While the pool holds its target the excess over 1 halves every half-life."""
        m = Margin(factor=1.4, raised_at_s=0.0, updated_at_s=0.0)
        m = update_margin(m, now_s=1800.0, violated=False, **STEP)
        assert m.factor == pytest.approx(1.2)

    def test_capped(self) -> None:
        """The margin never exceeds its maximum."""
        m = Margin(factor=1.95, raised_at_s=0.0, updated_at_s=1000.0)
        assert update_margin(m, now_s=1000.0, violated=True, **STEP).factor == 2.0

    def test_no_data_only_decays(self) -> None:
        """Without latency data the margin decays and never steps up."""
        m = Margin(factor=1.5, raised_at_s=0.0, updated_at_s=0.0)
        assert update_margin(m, now_s=900.0, violated=None, **STEP).factor < 1.5

    def test_malformed_state_starts_fresh(self) -> None:
        """A corrupt remembered margin is replaced by 1."""
        assert Margin.from_dict({"factor": "x"}) == Margin()
        assert Margin.from_dict({"factor": float("nan")}).factor == 1.0


def _feed(counts: np.ndarray, window_s: float = 30.0) -> Dispersion:
    d = Dispersion()
    for i, c in enumerate(counts):
        d = d.observe(i * window_s, float(c) / window_s, window_s, half_life_s=1800.0)
    return d


class TestDispersion:
    def test_poisson_is_one(self) -> None:
        """Poisson counts give an index of dispersion near 1."""
        rng = np.random.default_rng(0)
        idc = _feed(rng.poisson(300, 400)).index()
        assert idc is not None
        assert idc == pytest.approx(1.0, abs=0.25)

    def test_ramp_is_not_variability(self) -> None:
        """A linear ramp of the rate (a daily curve rising) leaves the index near 1."""
        rng = np.random.default_rng(1)
        idc = _feed(rng.poisson(np.linspace(100, 800, 400))).index()
        assert idc is not None
        assert idc < 1.4

    def test_bursts_raise_it(self) -> None:
        """Counts whose rate jumps by +-50% window to window are far from Poisson."""
        rng = np.random.default_rng(2)
        idc = _feed(rng.poisson(300 * rng.gamma(4.0, 0.25, 400))).index()
        assert idc is not None
        assert idc > 20

    def test_needs_samples(self) -> None:
        """Too few windows give no estimate (the model keeps its configured ca^2)."""
        assert _feed(np.full(5, 300)).index() is None

    def test_missing_rate_keeps_state(self) -> None:
        """A window without data changes nothing."""
        d = _feed(np.full(20, 300))
        assert d.observe(1000.0, None, 30.0, 1800.0) == d
