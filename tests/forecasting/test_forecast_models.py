"""Known answers of the individual forecasters."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pdscale.forecasting import statsmodels_models
from pdscale.forecasting.backtest import backtest, score
from pdscale.forecasting.base import Forecaster
from pdscale.forecasting.conformal import ResidualTracker
from pdscale.forecasting.ensemble import Ensemble
from pdscale.forecasting.naive import LastValue, SeasonalNaive
from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.quantile import QuantileGbm
from pdscale.forecasting.smoothing import Ewma, Holt
from pdscale.forecasting.statsmodels_models import Arima, HoltWinters, fit_arima

if TYPE_CHECKING:
    from .conftest import Feeder, SineFactory

HOUR = 3600.0
LIGHT = (LastValue, SeasonalNaive, Ewma, Holt)


def _mase(model: GridForecaster, y: np.ndarray, horizon_s: float = 300.0) -> float:
    t = np.arange(y.size) * 60.0
    res = backtest(model, t, y, horizon_s=horizon_s, step_s=60.0)
    return score(res, y, warmup_steps=240).mase


class TestProtocol:
    @pytest.mark.parametrize("cls", [LastValue, SeasonalNaive, Ewma, Holt, HoltWinters, Arima, QuantileGbm, Ensemble])
    def test_every_model_is_a_forecaster(self, cls: type[GridForecaster]) -> None:
        """Each built-in satisfies the Forecaster protocol and carries its entry-point name."""
        model = cls()
        assert isinstance(model, Forecaster)
        assert model.name == cls.name

    def test_no_data_is_not_ready(self) -> None:
        """Before any sample a forecast is 0 and not ready."""
        fc = Ewma().predict(300.0)
        assert not fc.ready
        assert fc.mean == 0.0

    def test_negative_value_is_rejected(self) -> None:
        """A negative observation is bad input and names the model."""
        with pytest.raises(ValueError, match="ewma"):
            Ewma().observe(0.0, -1.0)


class TestSeasonal:
    def test_seasonal_models_beat_last_value_on_sine(self, sine: SineFactory) -> None:
        """On a sine plus noise, seasonal naive and Holt-Winters have lower MASE than last value."""
        y = sine(600, 60)
        kw = {"step_s": 60.0, "season_s": HOUR, "horizons_s": (300.0,)}
        base = _mase(LastValue(**kw), y)
        assert _mase(SeasonalNaive(**kw), y) < 0.8 * base
        assert _mase(HoltWinters(**kw), y) < 0.8 * base

    def test_quantile_gbm_beats_last_value_on_sine(self, sine: SineFactory) -> None:
        """The lag/time-of-day quantile model learns the season."""
        y = sine(600, 60)
        kw = {"step_s": 60.0, "season_s": HOUR, "horizons_s": (300.0,)}
        assert _mase(QuantileGbm(**kw), y) < 0.8 * _mase(LastValue(**kw), y)

    def test_holt_winters_is_holt_with_short_history(self, sine: SineFactory, feed: Feeder) -> None:
        """With less than two seasons Holt-Winters forecasts with Holt and says so."""
        m = HoltWinters(step_s=60.0, season_s=HOUR)
        feed(m, sine(50, 60))
        fc = m.predict(300.0)
        assert not fc.ready
        assert "short history" in fc.note


class TestLevelChanges:
    @pytest.mark.parametrize("cls", [Ewma, Holt, Arima, Ensemble])
    def test_step_change_recovers(self, cls: type[GridForecaster], feed: Feeder) -> None:
        """After a jump from 100 to 300 the forecast is within 10% of 300 within 10 steps."""
        rng = np.random.default_rng(1)
        m = cls(step_s=60.0, season_s=HOUR, horizons_s=(60.0,))
        feed(m, 100 + rng.normal(0, 2, 200))
        feed(m, 300 + rng.normal(0, 2, 10), start=200)
        assert abs(m.predict(60.0).mean - 300) < 30

    @pytest.mark.parametrize("cls", [Ewma, Holt, HoltWinters, Ensemble])
    def test_outage_goes_to_zero_and_comes_back(
        self, cls: type[GridForecaster], feed: Feeder, sine: SineFactory
    ) -> None:
        """During a run of zeros forecasts drop to ~0; after traffic returns they come back."""
        m = cls(step_s=60.0, season_s=HOUR, horizons_s=(60.0,))
        feed(m, sine(240, 600, amp=10.0, noise=2.0))
        feed(m, np.zeros(15), start=240)
        assert m.predict(60.0).mean < 5.0
        feed(m, sine(15, 600, amp=10.0, noise=2.0, seed=3), start=255)
        assert m.predict(60.0).mean > 80.0

    def test_band_after_a_step_is_the_new_levels_noise(self, feed: Feeder) -> None:
        """Once a 3x step is detected, the p90 band holds the noise again, not the step itself."""
        rng = np.random.default_rng(2)
        m = LastValue(step_s=60.0, season_s=HOUR, horizons_s=(600.0,))
        feed(m, 100 + rng.normal(0, 2, 40))
        feed(m, 300 + rng.normal(0, 2, 15), start=40)
        p = m.predict(600.0)
        assert p.quantile(0.9) - p.mean < 20.0

    def test_a_restarted_band_says_so_until_it_has_its_own_residuals(self, feed: Feeder) -> None:
        """After a step the forecast's note names the restarted band; 30 scored residuals later it is gone."""
        rng = np.random.default_rng(3)
        m = LastValue(step_s=60.0, season_s=HOUR, horizons_s=(300.0,))
        feed(m, 100 + rng.normal(0, 2, 40))
        feed(m, 300 + rng.normal(0, 2, 10), start=40)
        assert "band restarted by a level shift" in m.predict(300.0).note
        feed(m, 300 + rng.normal(0, 2, 40), start=50)
        assert m.predict(300.0).note == ""

    def test_residuals_from_before_the_onset_are_kept(self) -> None:
        """A shift forgets the residuals of its last ``span`` steps and the pending forecasts, nothing older."""
        tr = ResidualTracker(window=100, min_residuals=1)
        tr.track(2)
        for k in range(10):
            tr.record(k, 2, 10.0)
            tr.resolve(k, 10.0 + k)
        assert tr.count(2) == 8  # targets 2..9
        assert tr.forget_shift(9, span=3) == 3  # targets 7, 8, 9
        assert tr.count(2) == 5
        tr.resolve(10, 99.0)  # its forecast was pending at the shift: never scored
        assert tr.count(2) == 5


class TestEarlyBand:
    @pytest.mark.parametrize("cls", [Ewma, Ensemble])
    def test_start_up_transient_does_not_widen_band(self, cls: type[GridForecaster], feed: Feeder) -> None:
        """One ramp-up step at the start (an empty fleet filling) leaves the early p90 band near the noise level."""
        rng = np.random.default_rng(4)
        m = cls(step_s=60.0, season_s=HOUR, horizons_s=(300.0,))
        feed(m, np.concatenate([[20.0], 120 + rng.normal(0, 5, 12)]))
        p = m.predict(300.0)
        assert p.quantile(0.9) - p.mean < 30.0


class TestMissing:
    @pytest.mark.parametrize("cls", [LastValue, Ewma, Holt, Ensemble])
    def test_nan_gap_is_missing_not_zero(self, cls: type[GridForecaster], feed: Feeder) -> None:
        """A run of missing samples does not pull the forecast towards zero."""
        m = cls(step_s=60.0, season_s=HOUR)
        feed(m, np.full(60, 100.0))
        feed(m, np.full(20, np.nan), start=60)
        m.observe(80 * 60.0, None)
        assert m.predict(300.0).mean > 90.0

    def test_irregular_samples_resample(self) -> None:
        """Samples at irregular times with a skipped step give the step means and a NaN gap."""
        m = LastValue(step_s=60.0)
        for t, v in ((5.0, 10.0), (50.0, 20.0), (70.0, 40.0), (200.0, 8.0)):
            m.observe(t, v)
        assert m._grid.value_at(1) == 15.0
        assert m._grid.value_at(2) == 40.0
        assert math.isnan(m._grid.value_at(3))


class TestFallback:
    def test_failed_fit_falls_back_and_says_so(
        self, feed: Feeder, sine: SineFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ARIMA whose fit raises forecasts with Holt, notes it, and logs forecast_fit_failed."""

        calls: list[int] = []

        def boom(y: np.ndarray, order: tuple[int, int, int]) -> None:
            calls.append(len(y))
            raise np.linalg.LinAlgError("singular")

        monkeypatch.setattr(statsmodels_models, "fit_arima", boom)
        m = Arima(step_s=60.0, season_s=HOUR)
        with capture_logs() as logs:
            feed(m, sine(100, 60))
        fc = m.predict(300.0)
        assert "fit failed" in fc.note
        assert "holt" in fc.note
        assert not fc.ready
        assert fc.mean > 0
        assert any(e["event"] == "forecast_fit_failed" and e["model"] == "arima" for e in logs)
        assert len(calls) <= 1 + 100 // m.refit_every_steps  # retried on the refit schedule, not every step

    def test_model_error_at_predict_falls_back_to_last_value(
        self, feed: Feeder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A model raising inside its forecast gives the last value and a note."""

        def boom(self: Holt, h: int) -> float:
            raise RuntimeError("broken")

        m = Holt()
        feed(m, np.full(10, 7.0))
        monkeypatch.setattr(Holt, "_point", boom)
        m._cache.clear()
        fc = m.predict(60.0)
        assert fc.mean == 7.0
        assert "fallback to last_value" in fc.note


values_st = st.lists(
    st.one_of(st.floats(min_value=0, max_value=1e6), st.just(math.nan), st.just(0.0)), min_size=1, max_size=120
)


class TestProperties:
    @settings(max_examples=40, deadline=None)
    @given(values=values_st, which=st.integers(0, len(LIGHT) - 1), horizon_s=st.floats(0, 3600))
    def test_forecasts_never_negative_and_quantiles_monotone(
        self, values: list[float], which: int, horizon_s: float
    ) -> None:
        """Any non-negative input with gaps gives non-negative, monotone quantiles."""
        m = LIGHT[which](step_s=60.0, season_s=HOUR)
        for i, v in enumerate(values):
            m.observe(i * 60.0, v)
        fc = m.predict(horizon_s)
        qs = [fc.quantiles[q] for q in sorted(fc.quantiles)]
        assert fc.mean >= 0
        assert all(v >= 0 for v in qs)
        assert qs == sorted(qs)
        assert {0.5, 0.9, 0.99} <= set(fc.quantiles)

    def test_ensemble_quantiles_monotone_on_trending_data(self, feed: Feeder) -> None:
        """The ensemble's quantiles are ordered and non-negative on a falling series."""
        m = Ensemble(step_s=60.0, season_s=HOUR, horizons_s=(300.0,))
        feed(m, np.linspace(200, 0, 150))
        fc = m.predict(300.0)
        qs = [fc.quantiles[q] for q in sorted(fc.quantiles)]
        assert qs == sorted(qs)
        assert qs[0] >= 0
        assert fc.mean >= 0


class TestArimaRecursion:
    def test_matches_statsmodels_extend_and_forecast(self) -> None:
        """Between refits the own ARIMA recursion gives statsmodels' extend + forecast path, gaps included."""
        import warnings

        from statsmodels.tsa.statespace.sarimax import SARIMAX

        rng = np.random.default_rng(0)
        y = 100 + np.cumsum(rng.normal(0, 3, 300)) * 0.5
        y = np.abs(y)
        y[260:263] = np.nan
        m = Arima(step_s=60.0, horizons_s=(300.0,), refit_every_steps=10_000, min_fit_steps=200)
        m._detector = None  # keep the fitted state: compare the recursion alone
        windows: list[np.ndarray] = []
        m._fit_task = lambda w, k: (windows.append(w.copy()), (fit_arima, (w, m.order)))[1]  # type: ignore[method-assign]
        for i, v in enumerate(y):
            m.observe(i * 60.0, None if math.isnan(v) else float(v))
        assert len(windows) == 1
        closed = m._grid.recent(m._grid.n_closed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = SARIMAX(windows[0], order=(2, 1, 1)).fit(disp=False).extend(closed[windows[0].size :]).forecast(5)
        assert np.allclose([m.point(h) for h in range(1, 6)], ref, rtol=1e-6)


class TestBackgroundFits:
    def test_fit_runs_off_the_observing_thread(self, feed: Feeder, sine: SineFactory) -> None:
        """With fits on the fit thread, observe returns while a fit still runs; the model holds its fallback."""
        import threading

        release = threading.Event()
        m = Arima(step_s=60.0, season_s=HOUR, fits="thread")

        def slow(y: np.ndarray, order: tuple[int, int, int]) -> object:
            release.wait(timeout=30)
            return fit_arima(y, order)

        m._fit_task = lambda y, k: (slow, (y, m.order))  # type: ignore[method-assign]
        feed(m, sine(40, 60))
        assert m._job is not None
        assert not m._job[0].done()
        assert "holt" in m.predict(300.0).note
        release.set()
        m._job[0].result()
        feed(m, sine(1, 60), start=40)
        assert m.predict(300.0).ready

    def test_fit_process_gives_inline_forecasts(self, sine: SineFactory) -> None:
        """Fits in the spawned fit process (pickled in and out) give the forecasts inline fits give."""
        y = sine(200, 60, noise=3.0)
        kw = {"step_s": 60.0, "season_s": HOUR, "horizons_s": (300.0,)}
        inline, remote = Arima(**kw), Arima(fits="process", **kw)
        for i, v in enumerate(y):
            inline.observe(i * 60.0, float(v))
            remote.observe(i * 60.0, float(v))
            if remote._job is not None:
                remote._job[0].result()  # wait for the worker: the next step applies the fit
        remote.observe(len(y) * 60.0, None)
        inline.observe(len(y) * 60.0, None)
        assert remote.n_fits == inline.n_fits > 0
        assert remote.point(5) == pytest.approx(inline.point(5), rel=1e-9)

    @pytest.mark.parametrize("cls", [Arima, HoltWinters, QuantileGbm])
    def test_late_fit_catches_up_to_inline(self, cls: type[GridForecaster], sine: SineFactory) -> None:
        """A fit applied steps later, then advanced through the steps since, forecasts as an inline fit does."""
        y = sine(700, 120, noise=3.0)
        kw = {"step_s": 60.0, "season_s": 120 * 60.0, "horizons_s": (300.0,)}
        inline, late = cls(**kw), cls(**kw)
        late.fitter = deferred = _Deferred()
        for i, v in enumerate(y):
            inline.observe(i * 60.0, float(v))
            late.observe(i * 60.0, float(v))
            if i % 7 == 0:
                deferred.run()  # fits finish only every 7th step: the model catches up on the steps between
        deferred.run()
        late.observe(len(y) * 60.0, None)
        inline.observe(len(y) * 60.0, None)
        assert late.n_fits > 0
        for h in (1, 5):
            assert late.point(h) == pytest.approx(inline.point(h), rel=1e-9)


class _Deferred:
    """A fitter whose jobs run only when told to."""

    def __init__(self) -> None:
        self.jobs: list[_Job] = []

    def submit(self, fn: Any, *args: Any) -> _Job:
        job = _Job(lambda: fn(*args))
        self.jobs.append(job)
        return job

    def run(self) -> None:
        for job in self.jobs:
            job.run()
        self.jobs = []


class _Job:
    def __init__(self, fn: Any) -> None:
        self.fn, self.finished, self.value = fn, False, None

    def run(self) -> None:
        self.value, self.finished = self.fn(), True

    def done(self) -> bool:
        return self.finished

    def result(self) -> Any:
        return self.value


class TestFitProcess:
    def test_dead_worker_fails_its_fits_and_restarts(self) -> None:
        """Fits held by a fit process that dies fail (the model falls back); the next fit starts a new worker."""
        import os
        import signal

        from pdscale.forecasting.fitting import FitWorkerError, ProcessFitter

        fitter = ProcessFitter()
        try:
            assert fitter.submit(pow, 2, 10).result() == 1024
            proc = fitter._proc
            assert proc is not None
            job = fitter.submit(__import__("time").sleep, 30)
            os.kill(proc.pid, signal.SIGKILL)
            with pytest.raises(FitWorkerError):
                job.result()
            assert fitter.submit(pow, 3, 3).result() == 27
            assert fitter._proc is not None
            assert fitter._proc.pid != proc.pid
        finally:
            fitter.shutdown()

    def test_submit_does_not_wait_for_a_busy_worker(self) -> None:
        """A large job queued behind a running fit returns at once (the pipe is fed by a writer thread)."""
        import time

        from pdscale.forecasting.fitting import ProcessFitter

        fitter = ProcessFitter()
        try:
            busy = fitter.submit(time.sleep, 2)
            big = fitter.submit(len, b"x" * (8 << 20))  # far more than a pipe buffer holds
            assert not busy.done()
            assert big.result() == 8 << 20
        finally:
            fitter.shutdown()

    def test_fit_error_comes_back(self) -> None:
        """An exception raised by a fit in the worker is re-raised by result()."""
        from pdscale.forecasting.fitting import ProcessFitter

        fitter = ProcessFitter()
        try:
            with pytest.raises(ZeroDivisionError):
                fitter.submit(divmod, 1, 0).result()
        finally:
            fitter.shutdown()
