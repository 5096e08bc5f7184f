"""StepGrid: resampling irregular samples onto a bounded regular grid."""

from __future__ import annotations

import math

import numpy as np

from pdscale.forecasting.grid import StepGrid


class TestStepGrid:
    def test_samples_in_one_step_are_averaged(self) -> None:
        """Samples inside one step become their mean when the step closes."""
        g = StepGrid(60.0, 10)
        g.add(10.0, 2.0)
        g.add(30.0, 4.0)
        closed = g.add(60.0, 6.0)
        assert closed == [(1, 4.0)]

    def test_gap_steps_are_nan_not_zero(self) -> None:
        """Steps without any sample close as NaN."""
        g = StepGrid(60.0, 10)
        g.add(60.0, 1.0)
        closed = g.add(240.0, 2.0)
        assert [k for k, _ in closed] == [2, 3, 4]
        assert math.isnan(closed[0][1])
        assert math.isnan(closed[1][1])
        assert closed[2][1] == 2.0

    def test_missing_sample_does_not_count(self) -> None:
        """A NaN sample is missing: a step with only NaN samples is NaN."""
        g = StepGrid(60.0, 10)
        closed = g.add(60.0, math.nan)
        assert math.isnan(closed[0][1])

    def test_late_sample_is_dropped(self) -> None:
        """A sample for a closed step is dropped and counted."""
        g = StepGrid(60.0, 10)
        g.add(120.0, 1.0)
        assert g.add(30.0, 5.0) == []
        assert g.dropped_late == 1

    def test_capacity_bounds_history(self) -> None:
        """Only the newest ``capacity`` steps are held."""
        g = StepGrid(1.0, 5)
        for i in range(20):
            g.add(float(i), float(i))
        assert g.recent(100).tolist() == [15.0, 16.0, 17.0, 18.0, 19.0]
        assert math.isnan(g.value_at(10))

    def test_huge_gap_is_bounded(self) -> None:
        """A gap longer than the buffer closes at most ``capacity`` NaN steps."""
        g = StepGrid(1.0, 5)
        g.add(0.0, 1.0)
        closed = g.add(1e6, 2.0)
        assert len(closed) <= 6
        assert np.isnan(g.recent(5)[:-1]).all()
