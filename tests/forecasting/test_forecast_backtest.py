"""Walk-forward backtests and accuracy metrics."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from pdscale.forecasting.backtest import backtest, score
from pdscale.forecasting.ensemble import Ensemble
from pdscale.forecasting.metrics import coverage, mase, naive_scale, pinball, smape
from pdscale.forecasting.naive import LastValue

if TYPE_CHECKING:
    from .conftest import SineFactory


class TestNoLookAhead:
    def test_perturbing_the_future_keeps_past_forecasts(self, sine: SineFactory) -> None:
        """Forecasts made before step 170 are identical whatever happens from step 170 on."""
        y = sine(200, 60)
        z = y.copy()
        z[170:] = z[170:] * 3 + 50
        t = np.arange(y.size) * 60.0
        kw = {"step_s": 60.0, "season_s": 3600.0, "horizons_s": (300.0,)}
        a = backtest(Ensemble(**kw), t, y, horizon_s=300.0, step_s=60.0)
        b = backtest(Ensemble(**kw), t, z, horizon_s=300.0, step_s=60.0)
        assert np.array_equal(a.mean[:170], b.mean[:170])
        assert np.array_equal(a.quantiles[0.9][:170], b.quantiles[0.9][:170])
        assert not np.array_equal(a.mean[170:], b.mean[170:])

    def test_actual_is_the_value_h_steps_later(self) -> None:
        """The outcome paired with origin i is values[i + h]; the tail without one is NaN."""
        y = np.arange(10, dtype=float)
        res = backtest(LastValue(step_s=1.0), np.arange(10.0), y, horizon_s=3.0, step_s=1.0)
        assert res.horizon_steps == 3
        assert res.actual[:7].tolist() == [3, 4, 5, 6, 7, 8, 9]
        assert np.isnan(res.actual[7:]).all()
        assert res.mean.tolist() == y.tolist()

    def test_last_value_mase_on_a_ramp(self) -> None:
        """Last value on a unit ramp at horizon 3 has MAE 3 and one-step naive scale 1: MASE 3."""
        y = np.arange(50, dtype=float)
        res = backtest(LastValue(step_s=1.0), np.arange(50.0), y, horizon_s=3.0, step_s=1.0)
        assert score(res, y).mase == pytest.approx(3.0)


class TestMetrics:
    def test_naive_scale_skips_gaps(self) -> None:
        """The MASE scale is the mean absolute one-step change over finite pairs."""
        assert naive_scale(np.array([1.0, 3.0, np.nan, 10.0, 11.0])) == pytest.approx(1.5)

    def test_mase_and_missing_pairs(self) -> None:
        """MASE ignores pairs with a missing side."""
        assert mase(np.array([1.0, 2.0, np.nan]), np.array([2.0, np.nan, 5.0]), 0.5) == pytest.approx(2.0)

    def test_smape_zero_over_zero_is_zero(self) -> None:
        """sMAPE counts an exact 0 forecast of 0 as no error, and 0 vs x as 200%."""
        assert smape(np.array([0.0, 0.0]), np.array([0.0, 5.0])) == pytest.approx(100.0)

    def test_pinball_averages_quantiles(self) -> None:
        """Pinball loss of q=0.9 under-forecast by 10 is 9, over-forecast by 10 is 1."""
        a = np.array([10.0])
        assert pinball(a, {0.9: np.array([0.0])}) == pytest.approx(9.0)
        assert pinball(a, {0.9: np.array([20.0]), 0.5: np.array([20.0])}) == pytest.approx((1.0 + 5.0) / 2)

    def test_coverage_is_share_at_or_below(self) -> None:
        """Coverage is the share of outcomes at or below the upper forecast."""
        assert coverage(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 1.0, 5.0, 5.0])) == pytest.approx(0.75)

    def test_empty_gives_nan(self) -> None:
        """Without pairs every metric is NaN, not 0."""
        e = np.array([np.nan])
        assert math.isnan(mase(e, e, 1.0))
        assert math.isnan(smape(e, e))
        assert math.isnan(coverage(e, e))


class TestCalibration:
    def test_conformal_p90_covers_about_ninety_percent(self) -> None:
        """On stationary noise the p90 of a point model covers 85-95% of outcomes."""
        rng = np.random.default_rng(7)
        y = 100 + rng.normal(0, 10, 1500)
        res = backtest(
            LastValue(step_s=60.0, horizons_s=(300.0,)), np.arange(1500) * 60.0, y, horizon_s=300.0, step_s=60.0
        )
        assert 0.85 <= score(res, y, warmup_steps=100).p90_coverage <= 0.95
