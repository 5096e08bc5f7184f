"""The online decode-shape fit: recovering a slope, trusting it only with evidence, bounded, robust, persistent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pdscale.controller.core.shape import DecodeShape, ShapeSettings

S = ShapeSettings()


def _fit(batches: np.ndarray, ratios: np.ndarray, tick_s: float = 30.0) -> DecodeShape:
    shape = DecodeShape()
    for i, (b, r) in enumerate(zip(batches, ratios, strict=True)):
        shape = shape.observe(i * tick_s, float(b), float(r), S)
    return shape


class TestDecodeShape:
    def test_recovers_level_and_slope(self) -> None:
        """Points from ratio = 0.6 x batch^0.2 with 3% noise give back a ~ ln 0.6 and b ~ 0.2."""
        rng = np.random.default_rng(0)
        b = rng.uniform(16, 160, 400)
        shape = _fit(b, 0.6 * b**0.2 * np.exp(rng.normal(0, 0.03, b.size)))
        coef = shape.coefficients(S)
        assert coef is not None
        assert coef[0] == pytest.approx(math.log(0.6), abs=0.05)
        assert coef[1] == pytest.approx(0.2, abs=0.02)

    def test_factor_at_an_unseen_batch_follows_the_law(self) -> None:
        """The factor at batch 200 is the fitted law's value there, not the level seen at smaller batches."""
        b = np.linspace(20, 120, 60)
        shape = _fit(b, 0.5 * (b / 20.0) ** 0.3)
        assert shape.factor(200.0, S) == pytest.approx(0.5 * 10.0**0.3, rel=0.01)

    def test_needs_a_spread_of_batches(self) -> None:
        """Many points at one batch size fix no slope: the fit is not trusted."""
        shape = _fit(np.full(100, 64.0), np.full(100, 0.7))
        assert not shape.trusted(S)
        assert shape.factor(64.0, S) is None

    def test_slope_is_kept_when_the_batches_narrow(self) -> None:
        """A long steady stretch at one batch keeps the slope learned from a spread, so the law still holds past it."""
        b = np.geomspace(10, 100, 80)
        shape = _fit(b, 0.5 * b**0.2)
        steady = 40.0
        for i in range(1500):  # 12.5 hours at 30 s ticks: the spread fades below min_spread
            shape = shape.observe(80 * 30.0 + i * 30.0, steady, 0.5 * steady**0.2, S)
        assert shape.factor(100.0, S) == pytest.approx(0.5 * 100.0**0.2, rel=0.01)
        assert shape.slope_is_kept(S)
        assert "slope kept" in shape.describe(S)

    def test_needs_enough_points(self) -> None:
        """Ten well-spread points are not yet enough."""
        assert _fit(np.geomspace(4, 200, 10), np.full(10, 0.8)).factor(50.0, S) is None

    def test_slope_and_factor_are_bounded(self) -> None:
        """A trend proportional to the batch is held to max_slope, and the factor to [min_factor, max_factor]."""
        b = np.geomspace(2, 24, 80)
        shape = _fit(b, 0.3 * b / 2.0)
        coef = shape.coefficients(S)
        assert coef is not None
        assert coef[1] == S.max_slope
        assert S.min_factor <= (shape.factor(1.0, S) or 0) <= S.max_factor
        assert shape.factor(10_000.0, S) == S.max_factor

    def test_outlier_is_dropped_once_trusted(self) -> None:
        """A point 10x off the trusted fit leaves the fit unchanged and counts as rejected."""
        b = np.linspace(20, 120, 60)
        shape = _fit(b, np.full(b.size, 0.8) * (1 + 0.01 * np.sin(b)))
        after = shape.observe(60 * 30.0, 64.0, 8.0, S)
        assert after.rejected == shape.rejected + 1
        assert after.coefficients(S) == shape.coefficients(S)

    def test_old_points_fade(self) -> None:
        """After many half-lives, a new regime's points dominate the fit."""
        b = np.linspace(20, 120, 60)
        shape = _fit(b, np.full(b.size, 0.6))
        for i, x in enumerate(b):
            shape = shape.observe(30 * 3600.0 + i * 30.0, float(x), 1.2, ShapeSettings(outlier_k=1e9))
        assert shape.factor(64.0, S) == pytest.approx(1.2, rel=0.05)

    def test_round_trips_and_rejects_garbage(self) -> None:
        """to_dict/from_dict keep the fit; malformed or non-finite state starts fresh."""
        shape = _fit(np.linspace(20, 120, 40), np.full(40, 0.9))
        assert DecodeShape.from_dict(shape.to_dict()) == shape
        assert DecodeShape.from_dict({"w": "x"}) == DecodeShape()
        assert DecodeShape.from_dict({"w": float("nan")}) == DecodeShape()
        assert DecodeShape.from_dict(None) == DecodeShape()

    def test_bad_points_are_ignored(self) -> None:
        """NaN, zero and sub-1 batches change nothing."""
        shape = DecodeShape()
        for b, r in ((float("nan"), 1.0), (10.0, 0.0), (0.5, 1.0), (10.0, float("inf"))):
            assert shape.observe(0.0, b, r, S) == shape


class TestSloUsesTheShape:
    def _shape(self) -> DecodeShape:
        b = np.linspace(8, 64, 60)
        return _fit(b, 0.5 * (b / 8.0) ** 0.3)

    def test_decode_sized_with_the_factor_at_its_own_batch(self) -> None:
        """The decode correction is the learned law at the batch it sizes for, never below it (a fixed point)."""
        from pdscale.controller.core.capacity import Correction, Workload
        from pdscale.controller.policies.slo import SloPolicy
        from tests.controller.test_policies import MODEL, ctx

        shape = self._shape()
        p = SloPolicy().decide(ctx(state={"decode_shape": shape.to_dict()}))
        f = p.estimates["decode"]["decode_shape_factor"]
        batch = MODEL.decode_batch(50.0, Workload(1000.0, 200.0), Correction(decode=f))
        law = shape.factor(batch, S)
        assert law is not None
        assert law - 1e-3 <= f <= law * 1.01
        assert "decode shape learned" in p.reasons["decode"]

    def test_untrusted_shape_keeps_the_scalar(self) -> None:
        """Without a trusted fit, decode is sized as before and the reason says nothing of a shape."""
        from pdscale.controller.policies.slo import SloPolicy
        from tests.controller.test_policies import ctx

        p = SloPolicy().decide(ctx())
        assert "decode_shape_factor" not in p.estimates["decode"]
        assert SloPolicy({"learn_decode_shape": False}).decide(ctx()).targets == p.targets
