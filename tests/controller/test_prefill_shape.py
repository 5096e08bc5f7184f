"""The online prefill-shape fit: finding a knee, trusting it only with evidence, bounded, robust, persistent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pdscale.controller.core.prefill_shape import PrefillShape, PrefillShapeSettings

S = PrefillShapeSettings()


def _fit(tokens: np.ndarray, ratios: np.ndarray, tick_s: float = 30.0) -> PrefillShape:
    shape = PrefillShape()
    for i, (t, r) in enumerate(zip(tokens, ratios, strict=True)):
        shape = shape.observe(i * tick_s, float(t), float(r), S)
    return shape


def _knee_ratio(t: np.ndarray) -> np.ndarray:
    """As profiled up to 2048 tokens, then the ratio grows as (T / 2048)^0.3."""
    return np.maximum(1.0, (t / 2048.0) ** 0.3)


class TestPrefillShape:
    def test_finds_the_knee(self) -> None:
        """Points from a hinge at 2048 tokens with 2% noise give back that knee and slope."""
        rng = np.random.default_rng(0)
        t = rng.uniform(600, 8192, 400)
        shape = _fit(t, _knee_ratio(t) * np.exp(rng.normal(0, 0.02, t.size)))
        law = shape.law(S)
        assert law is not None
        assert law[0] == 2048
        assert law[2] == pytest.approx(0.3, abs=0.03)

    def test_factor_below_and_above_the_knee(self) -> None:
        """The factor is ~1 for a 1000-token batch and the hinge's value for an 8192-token one."""
        t = np.geomspace(600, 8192, 120)
        shape = _fit(t, _knee_ratio(t))
        assert shape.factor(1000.0, S) == pytest.approx(1.0, abs=0.01)
        assert shape.factor(8192.0, S) == pytest.approx(4.0**0.3, rel=0.01)

    def test_plain_power_law_without_a_knee(self) -> None:
        """A ratio of 0.8 x (T/1000)^0.1 over the whole range is read back at both ends."""
        t = np.geomspace(1000, 16000, 100)
        shape = _fit(t, 0.8 * (t / 1000.0) ** 0.1)
        assert shape.factor(1000.0, S) == pytest.approx(0.8, rel=0.01)
        assert shape.factor(16000.0, S) == pytest.approx(0.8 * 16.0**0.1, rel=0.01)

    def test_not_extrapolated_past_the_batches_seen(self) -> None:
        """Past the largest batch seen the factor stays at its value there."""
        t = np.geomspace(600, 4096, 100)
        shape = _fit(t, _knee_ratio(t))
        assert shape.factor(32768.0, S) == pytest.approx(shape.factor(4096.0, S) or 0.0)

    def test_needs_a_spread_of_batch_sizes(self) -> None:
        """Many points at one batch size fix no shape: the fit is not trusted and the factor is None."""
        shape = _fit(np.full(100, 8192.0), np.full(100, 1.5))
        assert not shape.trusted(S)
        assert shape.factor(8192.0, S) is None

    def test_needs_enough_points(self) -> None:
        """Ten well-spread points are not yet enough."""
        assert _fit(np.geomspace(500, 8000, 10), np.full(10, 1.2)).factor(2000.0, S) is None

    def test_factor_is_bounded(self) -> None:
        """A ratio growing 10x over the range is held to max_factor."""
        t = np.geomspace(500, 8000, 80)
        shape = _fit(t, 0.5 * (t / 500.0) ** 1.0)
        assert shape.factor(8000.0, S) == S.max_factor

    def test_outlier_is_dropped_once_trusted(self) -> None:
        """A point 10x off the trusted fit leaves the fit unchanged and counts as rejected."""
        t = np.geomspace(600, 8192, 60)
        shape = _fit(t, _knee_ratio(t))
        after = shape.observe(1e6, 4000.0, 10.0, S)
        assert after.rejected == shape.rejected + 1
        assert after.w == shape.w

    def test_bad_points_are_ignored(self) -> None:
        """NaN, zero and sub-token points change nothing."""
        shape = PrefillShape()
        for t, r in ((math.nan, 1.0), (1000.0, 0.0), (0.5, 1.0), (1000.0, math.inf)):
            assert shape.observe(0.0, t, r, S) == shape

    def test_old_points_fade(self) -> None:
        """After many half-lives of a new flat ratio, the old knee no longer shows at a full batch."""
        t = np.geomspace(600, 8192, 100)
        shape = _fit(t, _knee_ratio(t))
        for i, tok in enumerate(np.tile(t, 3)):
            shape = shape.observe(1e6 + i * 600.0, float(tok), 1.0, S)
        assert shape.factor(8192.0, S) == pytest.approx(1.0, abs=0.03)

    def test_round_trips_and_rejects_garbage(self) -> None:
        """to_dict/from_dict keeps the fit; malformed state starts fresh."""
        t = np.geomspace(600, 8192, 60)
        shape = _fit(t, _knee_ratio(t))
        assert PrefillShape.from_dict(shape.to_dict()) == shape
        assert PrefillShape.from_dict({"w": "x"}) == PrefillShape()
        assert PrefillShape.from_dict({**shape.to_dict(), "sh": [1.0]}) == PrefillShape()
        assert PrefillShape.from_dict({**shape.to_dict(), "sx": math.nan}) == PrefillShape()

    def test_describe_names_the_knee(self) -> None:
        """The explain line names the knee and the factor at the largest batch seen."""
        t = np.geomspace(600, 8192, 60)
        line = _fit(t, _knee_ratio(t)).describe(S)
        assert "knee 2048 tok" in line
        assert f"x{4.0**0.3:.2f} at 8192 tok" in line
        assert "not enough" in PrefillShape().describe(S)


class TestSloUsesThePrefillShape:
    def _knee(self) -> PrefillShape:
        t = np.geomspace(600, 8192, 80)
        return _fit(t, _knee_ratio(t))

    def test_prefill_sized_with_the_learned_knee(self) -> None:
        """With a trusted knee in state, prefill is sized with its factor at a full batch, not the profile's."""
        from pdscale.controller.policies.slo import SloPolicy
        from tests.controller.test_policies import ctx

        c = ctx(rate=40.0, state={"prefill_shape": self._knee().to_dict()})
        shaped = SloPolicy({"calibrate": False}).decide(c)
        plain = SloPolicy({"calibrate": False, "learn_prefill_shape": False}).decide(c)
        assert shaped.targets["prefill"] > plain.targets["prefill"]
        assert "prefill shape learned" in shaped.reasons["prefill"]
        assert shaped.estimates["prefill"]["prefill_shape_full_batch"] == pytest.approx(
            self._knee().factor(8000.0, S) or 0.0
        )
        assert "prefill shape" not in plain.reasons["prefill"]

    def test_batch_points_feed_the_shape(self) -> None:
        """Each tick's mean batch tokens and batch time from a prefill pool become one point of the fit."""
        from pdscale.controller.core.capacity import Workload
        from pdscale.controller.policies.slo import SloPolicy
        from tests.controller.test_policies import MODEL, ctx

        w = Workload(1000.0, 200.0)
        state: dict[str, object] = {}
        for i, tokens in enumerate(np.geomspace(800, 8000, 30)):
            ms = MODEL.profile_prefill_batch_ms(float(tokens), w) * float(_knee_ratio(np.array([tokens]))[0])
            extra = {"prefill_batch_tokens_mean": float(tokens), "prefill_batch_ms_mean": ms}
            state = dict(SloPolicy().decide(ctx(now=1000.0 + 30 * i, state=state, extra=extra)).state)
        shape = PrefillShape.from_dict(state["prefill_shape"])  # type: ignore[arg-type]
        assert shape.w == pytest.approx(sum(0.5 ** (30.0 * k / S.half_life_s) for k in range(30)))
        assert shape.factor(8000.0, S) == pytest.approx(float(_knee_ratio(np.array([8000.0]))[0]), rel=0.05)

    def test_untrusted_shape_keeps_the_scalar(self) -> None:
        """Without a trusted fit, prefill is sized as before and the reason says nothing of a shape."""
        from pdscale.controller.policies.slo import SloPolicy
        from tests.controller.test_policies import ctx

        p = SloPolicy().decide(ctx(rate=40.0))
        assert "prefill_shape_full_batch" not in p.estimates["prefill"]
        assert SloPolicy({"learn_prefill_shape": False}).decide(ctx(rate=40.0)).targets == p.targets
