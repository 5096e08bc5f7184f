"""Per-step signals from per-request arrays, and the Little's-law decode forecaster."""

from __future__ import annotations

import numpy as np
import pytest

from pdscale.forecasting.backtest import backtest, score
from pdscale.forecasting.base import Signal
from pdscale.forecasting.ensemble import Ensemble
from pdscale.forecasting.little import LittleLawConcurrency
from pdscale.forecasting.signals import DecodeTimeModel, build_signals, series_from_rate


def _brute(
    a: np.ndarray, inp: np.ndarray, out: np.ndarray, itl_s: float, t_end: float, step: float
) -> tuple[np.ndarray, np.ndarray]:
    ts = np.arange(0, t_end, 1e-4) + 5e-5
    conc = np.zeros_like(ts)
    kv = np.zeros_like(ts)
    for aa, ii, oo in zip(a, inp, out, strict=True):
        on = (ts >= aa) & (ts < aa + oo * itl_s)
        conc += on
        kv += on * (ii + (ts - aa) / itl_s)
    n = int(t_end / step)
    return conc.reshape(n, -1).mean(1), kv.reshape(n, -1).mean(1)


class TestBuildSignals:
    def test_prefill_and_rate_count_arrivals_per_step(self) -> None:
        """Arrivals in (k-1, k] step s count towards step k; tokens/s and requests/s per step."""
        s = build_signals(
            np.array([0.5, 1.0, 1.5]), np.array([10.0, 20.0, 30.0]), np.array([1.0, 1.0, 1.0]), step_s=1.0
        )
        assert s.prefill_tps.tolist() == [30.0, 30.0]
        assert s.request_rate_rps.tolist() == [2.0, 1.0]

    def test_concurrency_and_kv_are_exact_time_averages(self) -> None:
        """Decode concurrency and KV tokens match a fine-grained brute-force average."""
        rng = np.random.default_rng(0)
        a = np.sort(rng.uniform(0, 8, 30))
        inp = rng.integers(10, 500, 30).astype(float)
        out = rng.integers(1, 60, 30).astype(float)
        s = build_signals(a, inp, out, step_s=1.0, decode=DecodeTimeModel(itl_ms=40.0), t_end_s=12.0)
        conc, kv = _brute(a, inp, out, 0.04, 12.0, 1.0)
        assert np.allclose(s.decode_concurrency, conc, atol=0.01)
        assert np.allclose(s.kv_tokens, kv, rtol=0.01, atol=1.0)

    def test_decode_s_missing_where_no_arrivals(self) -> None:
        """A step without arrivals has no mean decode duration (NaN)."""
        s = build_signals(np.array([0.5, 2.5]), np.array([1.0, 1.0]), np.array([10.0, 20.0]), step_s=1.0)
        assert s.decode_s[0] == pytest.approx(0.4)
        assert np.isnan(s.decode_s[1])

    def test_bad_arrays_are_rejected(self) -> None:
        """Mismatched lengths are a clear error."""
        with pytest.raises(ValueError, match="same length"):
            build_signals(np.zeros(2), np.zeros(3), np.zeros(2), step_s=1.0)

    def test_series_from_rate_follows_the_rate(self) -> None:
        """Synthesised series scale with the rate and keep gaps missing."""
        rate = np.array([10.0, 20.0, np.nan])
        s = series_from_rate(
            rate, step_s=60.0, input_tokens=np.full(5, 100.0), output_tokens=np.full(5, 50.0), poisson=False
        )
        assert s.prefill_tps[:2].tolist() == pytest.approx([1000.0, 2000.0])
        assert s.decode_concurrency[1] == pytest.approx(20 * 50 * 0.04)
        assert np.isnan(s.prefill_tps[2])


class TestLittleLaw:
    def test_rate_times_duration(self) -> None:
        """With a steady rate and decode time, concurrency forecast = rate x duration."""
        m = LittleLawConcurrency(step_s=60.0)
        for i in range(30):
            m.observe_drivers(i * 60.0, 5.0, 8.0)
            m.observe(i * 60.0, 40.0)
        fc = m.predict(300.0)
        assert fc.ready
        assert fc.mean == pytest.approx(40.0)

    def test_not_ready_without_drivers(self) -> None:
        """Without request-rate input it cannot forecast and says so."""
        m = LittleLawConcurrency(step_s=60.0)
        m.observe(0.0, 4.0)
        fc = m.predict(60.0)
        assert not fc.ready
        assert "fallback" in fc.note

    def test_decode_ensemble_scores_little_law(self) -> None:
        """The decode-concurrency ensemble runs a little_law member on the drivers and scores it."""
        rng = np.random.default_rng(2)
        rate = 5 + 2 * np.sin(np.arange(300) * 2 * np.pi / 60)
        s = series_from_rate(
            rate,
            step_s=60.0,
            input_tokens=rng.integers(50, 500, 100).astype(float),
            output_tokens=rng.integers(10, 300, 100).astype(float),
            rng=rng,
        )
        m = Ensemble(
            signal=Signal.DECODE_CONCURRENCY,
            step_s=60.0,
            season_s=3600.0,
            horizons_s=(300.0,),
            members=("last_value", "ewma"),
        )
        res = backtest(
            m, s.t_s, s.decode_concurrency, horizon_s=300.0, step_s=60.0, drivers=(s.request_rate_rps, s.decode_s)
        )
        assert "little_law" in m.member_names
        assert m.scores["little_law"] > 0
        assert score(res, s.decode_concurrency).mase < 5
