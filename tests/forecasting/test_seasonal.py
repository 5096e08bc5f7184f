"""Seasonal history and floor: yesterday and last week at this time, scaled by how much of it came back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pdscale.forecasting.seasonal import DAY_S, WEEK_S, FloorSettings, SeasonalHistory, seasonal_floor

BIN = 60.0
GAP_END = 3 * 3600.0  # the load returns 3 h into each day
LEAD = 330.0


def gap_day(t_of_day: float) -> float:
    """Load of a day with a quiet night that ends at GAP_END: 2 before it, 100 after."""
    return 2.0 if t_of_day < GAP_END else 100.0


def fill(h: SeasonalHistory, start_s: float, end_s: float, value_at: object, scale: float = 1.0) -> None:
    """One sample per 30 s over [start_s, end_s) of ``scale * value_at(time of day)``."""
    for t in np.arange(start_s, end_s, 30.0):
        h.observe(float(t), scale * value_at(float(t) % DAY_S))  # type: ignore[operator]


def history_with_days(days: tuple[int, ...], scale: float = 1.0) -> SeasonalHistory:
    """Past days (1 = yesterday) of gap_day from midnight to 4 h, then today up to just before the return."""
    h = SeasonalHistory(bin_s=BIN)
    for d in days:
        fill(h, -d * DAY_S, -d * DAY_S + 4 * 3600.0, gap_day)
    fill(h, 0.0, GAP_END - LEAD, gap_day, scale)
    return h


class TestSeasonalHistory:
    def test_bin_is_the_mean_of_its_samples(self) -> None:
        """Samples 2 and 4 in one bin read 3; the empty neighbour reads NaN."""
        h = SeasonalHistory(bin_s=BIN)
        h.observe(0.0, 2.0)
        h.observe(30.0, 4.0)
        got = h.values(0.0, 60.0)
        assert got[0] == 3.0
        assert math.isnan(got[1])

    def test_missing_values_are_ignored(self) -> None:
        """None, NaN and negative samples leave the bin as it was."""
        h = SeasonalHistory(bin_s=BIN)
        for v in (None, math.nan, -1.0):
            h.observe(10.0, v)
        h.observe(20.0, 5.0)
        assert h.values(0.0, 0.0)[0] == 5.0

    def test_bin_past_the_span_is_forgotten(self) -> None:
        """A ring of 3 bins: bin 0 is overwritten by bin 3 and reads NaN; bin 3 holds its own value."""
        h = SeasonalHistory(bin_s=BIN, span_s=3 * BIN)
        h.observe(0.0, 1.0)
        h.observe(3 * BIN, 7.0)
        assert math.isnan(h.values(0.0, 0.0)[0])
        assert h.values(3 * BIN, 3 * BIN)[0] == 7.0

    def test_backfill_after_live_samples_keeps_both(self) -> None:
        """A backfill of older bins after today's samples: both readable, the newer bin untouched."""
        h = SeasonalHistory(bin_s=BIN)
        h.observe(DAY_S, 9.0)
        assert h.backfill([0.0, 30.0], [1.0, 3.0]) == 2
        assert h.values(0.0, 0.0)[0] == 2.0
        assert h.values(DAY_S, DAY_S)[0] == 9.0

    def test_sample_older_than_the_span_is_dropped(self) -> None:
        """Once bin 3 is held in a 3-bin ring, a sample for bin 0 does not overwrite it."""
        h = SeasonalHistory(bin_s=BIN, span_s=3 * BIN)
        h.observe(3 * BIN, 7.0)
        h.observe(0.0, 1.0)
        assert h.values(3 * BIN, 3 * BIN)[0] == 7.0

    def test_aligned_rows_are_the_same_bins_a_lag_earlier(self) -> None:
        """Row 0 is today's window, row 1 the same bins a day earlier, as values() reads them."""
        h = SeasonalHistory(bin_s=BIN)
        fill(h, -DAY_S, -DAY_S + 600.0, lambda t: t)
        fill(h, 0.0, 600.0, lambda t: 2 * t)
        rows = h.aligned(120.0, 300.0, (DAY_S,))
        np.testing.assert_array_equal(rows[0], h.values(120.0, 300.0))
        np.testing.assert_array_equal(rows[1], h.values(120.0 - DAY_S, 300.0 - DAY_S))


class TestSeasonalFloor:
    def test_return_is_predicted_one_lead_ahead(self) -> None:
        """Just before the return, both lags say 100 at now + lead, and today's gap matches history's: 100."""
        h = history_with_days((1, 7))
        f = seasonal_floor(h, GAP_END - LEAD, LEAD)
        assert f is not None
        assert f.value == pytest.approx(100.0)
        assert {m.lag_s for m in f.matches} == {DAY_S, WEEK_S}

    def test_floor_follows_history_not_the_quiet_present(self) -> None:
        """Ten minutes before the lead reaches the return, history at now + lead is still the gap: 2."""
        h = history_with_days((1,))
        f = seasonal_floor(h, GAP_END - LEAD - 600.0, LEAD)
        assert f is not None
        assert f.value == pytest.approx(2.0)

    def test_quieter_today_scales_the_floor_down(self) -> None:
        """Today's gap at half of history's: the floor is half of history's return."""
        h = history_with_days((1,), scale=0.5)
        f = seasonal_floor(h, GAP_END - LEAD, LEAD)
        assert f is not None
        assert f.value == pytest.approx(50.0)

    def test_busier_today_never_exceeds_history(self) -> None:
        """Today at twice history's level: the ratio stops at max_ratio 1, the floor at history's 100."""
        h = history_with_days((1,), scale=2.0)
        f = seasonal_floor(h, GAP_END - LEAD, LEAD)
        assert f is not None
        assert f.matches[0].ratio == 1.0
        assert f.value == pytest.approx(100.0)

    def test_changed_normal_decays_the_floor(self) -> None:
        """History said 100 from GAP_END; today stays at 2. Ten minutes on, the 30-minute came-back ratio is
        today's sum over history's (30 x 2 over 20 x 2 + 10 x 100) and the floor is that share of 100."""
        h = SeasonalHistory(bin_s=BIN)
        fill(h, -DAY_S, -DAY_S + 4 * 3600.0, gap_day)
        fill(h, 0.0, GAP_END + 600.0, lambda t: 2.0)
        now = GAP_END + 600.0 - 30.0  # in the last bin held today
        f = seasonal_floor(h, now, LEAD)
        assert f is not None
        n_bins = len(h.values(now - 1800.0, now))
        past = h.values(now - 1800.0 - DAY_S, now - DAY_S)
        expected_ratio = 2.0 * n_bins / float(past.sum())
        assert f.matches[0].ratio == pytest.approx(expected_ratio)
        assert f.value == pytest.approx(expected_ratio * 100.0)
        assert f.value < 10.0

    def test_missing_lag_uses_the_other(self) -> None:
        """Only last week is held: the floor comes from 7 days ago alone."""
        h = history_with_days((7,))
        f = seasonal_floor(h, GAP_END - LEAD, LEAD)
        assert f is not None
        assert [m.lag_s for m in f.matches] == [WEEK_S]

    def test_no_history_gives_no_floor(self) -> None:
        """Today alone: no lag has data, so there is no floor."""
        h = SeasonalHistory(bin_s=BIN)
        fill(h, 0.0, GAP_END - LEAD, gap_day)
        assert seasonal_floor(h, GAP_END - LEAD, LEAD) is None

    def test_thin_overlap_gives_no_floor(self) -> None:
        """Yesterday held only 5 minutes of the 30-minute window (under half): that lag does not count."""
        h = SeasonalHistory(bin_s=BIN)
        now = GAP_END - LEAD
        fill(h, now - DAY_S - 300.0, now - DAY_S + 3600.0, gap_day)
        fill(h, 0.0, now, gap_day)
        assert seasonal_floor(h, now, LEAD) is None

    def test_largest_lag_wins(self) -> None:
        """Yesterday a holiday (no return), last week normal: each lag corrected by its own ratio, the max."""
        h = SeasonalHistory(bin_s=BIN)
        fill(h, -DAY_S, -DAY_S + 4 * 3600.0, lambda t: 2.0)
        fill(h, -7 * DAY_S, -7 * DAY_S + 4 * 3600.0, gap_day)
        fill(h, 0.0, GAP_END - LEAD, gap_day)
        f = seasonal_floor(h, GAP_END - LEAD, LEAD)
        assert f is not None
        assert f.value == pytest.approx(100.0)
        assert min(m.floor for m in f.matches) == pytest.approx(2.0)

    def test_one_odd_bin_at_the_target_does_not_move_it(self) -> None:
        """A 10x spike in the one bin at now + lead a day ago: the median of its three bins ignores it."""
        h = history_with_days((1,))
        now = GAP_END - LEAD + 600.0
        fill(h, GAP_END - LEAD, now, gap_day)
        k = (now + LEAD - DAY_S) // BIN * BIN
        h.observe(k + 1.0, 2800.0)  # with its two samples of 100, the bin now averages 1000
        f = seasonal_floor(h, now, LEAD)
        assert f is not None
        assert f.value == pytest.approx(100.0)

    def test_ratio_measured_on_the_load_gauge(self) -> None:
        """A signal whose own ratio is 0.5 but whose load gauge came back fully: the floor is history's value."""
        sig, load = SeasonalHistory(bin_s=BIN), SeasonalHistory(bin_s=BIN)
        for h, today in ((sig, 0.5), (load, 1.0)):
            fill(h, -DAY_S, -DAY_S + 4 * 3600.0, gap_day)
            fill(h, 0.0, GAP_END - LEAD, gap_day, today)
        assert seasonal_floor(sig, GAP_END - LEAD, LEAD).value == pytest.approx(50.0)  # type: ignore[union-attr]
        f = seasonal_floor(sig, GAP_END - LEAD, LEAD, load=load)
        assert f is not None
        assert f.value == pytest.approx(100.0)

    def test_settings_are_validated(self) -> None:
        """A zero window is rejected by name."""
        with pytest.raises(ValueError, match="window_s"):
            FloorSettings(window_s=0.0)
