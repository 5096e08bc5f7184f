"""Assembly: forecasters built per pool and signal from the settings."""

from __future__ import annotations

from pdscale.controller.core.types import Signal
from pdscale.controller.runtime.assembly import forecaster_factory
from pdscale.controller.runtime.plugins import Registry
from pdscale.controller.runtime.settings import Settings, load_settings
from pdscale.forecasting.ensemble import Ensemble
from pdscale.forecasting.fitting import INLINE, FitMode, fitter_for

EXAMPLE = "examples/simulator.yaml"


def _ensemble_settings() -> Settings:
    """The example settings with the ensemble forecaster (the default is last_value)."""
    settings = load_settings(EXAMPLE)
    return settings.model_copy(update={"forecasting": settings.forecasting.model_copy(update={"model": "ensemble"})})


class TestForecasterFactory:
    def test_decode_concurrency_ensemble_has_littles_law_member(self) -> None:
        """The ensemble is told its signal, so decode concurrency gets the Little's-law member."""
        make = forecaster_factory(_ensemble_settings(), Registry())
        decode = make("decode", Signal.DECODE_CONCURRENCY)
        prefill = make("prefill", Signal.PREFILL_TPS)
        assert isinstance(decode, Ensemble)
        assert isinstance(prefill, Ensemble)
        assert "little_law" in decode.member_names
        assert "little_law" not in prefill.member_names

    def test_fits_inline_unless_asked(self) -> None:
        """Replays fit inline (reproducible); the daemon's factory moves fits to the shared fit process."""
        settings = _ensemble_settings()
        inline = forecaster_factory(settings, Registry())("prefill", Signal.PREFILL_TPS)
        background = forecaster_factory(settings, Registry(), fits=FitMode.PROCESS)("prefill", Signal.PREFILL_TPS)
        assert isinstance(inline, Ensemble)
        assert isinstance(background, Ensemble)
        assert inline.fitter is INLINE
        assert all(m.fitter is INLINE for m in inline.members)
        assert background.fitter is fitter_for(FitMode.PROCESS)
        assert all(m.fitter is fitter_for(FitMode.PROCESS) for m in background.members)


def _history_steps(fc: object) -> int:
    """Steps of history the forecaster and its members keep."""
    from pdscale.forecasting.grid import StepGrid

    grids = [getattr(m, "_grid", None) for m in (fc, *getattr(fc, "members", ()))]
    return sum(g.capacity for g in grids if isinstance(g, StepGrid))


class TestHistoryBound:
    def test_history_does_not_grow_as_the_tick_shrinks(self) -> None:
        """A 0.5 s or 1.5 s tick keeps no more forecaster history than a 30 s one (14 days / 30 s steps)."""
        settings = load_settings(EXAMPLE)
        sizes = {
            tick: _history_steps(
                forecaster_factory(settings.model_copy(update={"tick_s": tick}), Registry())(
                    "prefill", Signal.PREFILL_TPS
                )
            )
            for tick in (0.5, 1.5, 30.0)
        }
        print("history steps by tick_s:", sizes)
        assert sizes[0.5] == sizes[1.5] == sizes[30.0] > 0
