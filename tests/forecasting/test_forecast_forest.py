"""Flattened boosted trees score rows as scikit-learn does."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from pdscale.forecasting.forest import Forest


class TestForest:
    def test_matches_scikit_learn_with_missing_values(self) -> None:
        """Every quantile model's prediction equals scikit-learn's, NaN features included."""
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1500, 8))
        x[::7, 2] = np.nan
        y = 2 * x[:, 0] + np.sin(x[:, 1]) + rng.normal(size=1500)
        models = {
            q: HistGradientBoostingRegressor(loss="quantile", quantile=q, max_iter=40, max_leaf_nodes=15).fit(x, y)
            for q in (0.5, 0.9, 0.99)
        }
        forest = Forest.from_models(models)
        rows = rng.normal(size=(100, 8))
        rows[::3, 2] = np.nan
        rows[::5, 4] = np.nan
        for row in rows:
            got = forest.predict_row(row)
            for q, m in models.items():
                assert got[q] == pytest.approx(float(m.predict(row[None, :])[0]), abs=1e-9)

    def test_constant_target_is_the_baseline(self) -> None:
        """A model with nothing to split predicts its baseline."""
        x = np.arange(200, dtype=float)[:, None]
        m = HistGradientBoostingRegressor(loss="quantile", quantile=0.5, max_iter=5).fit(x, np.full(200, 3.0))
        assert Forest.from_models({0.5: m}).predict_row(np.array([10.0]))[0.5] == pytest.approx(3.0)
