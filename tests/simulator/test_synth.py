"""Trace synthesis: reproducibility, mean rate against the curve, pairwise lengths, burstiness."""

from __future__ import annotations

import numpy as np
import pytest

from pdscale.simulator.synth import synthesize
from pdscale.simulator.traces import RateCurve, Trace, TraceError, bundled_trace, load_rate_curve


def _lengths() -> Trace:
    return Trace(np.zeros(3), np.array([100, 2000, 50]), np.array([7, 300, 1]), "pairs")


def _flat(rate: float) -> RateCurve:
    return RateCurve(np.array([0.0, 600.0]), np.array([rate, rate]), 600.0, "flat")


def test_same_seed_same_trace() -> None:
    """The same arguments and seed give identical arrays; another seed does not."""
    curve = load_rate_curve("servegen-14d")
    a = synthesize(curve, _lengths(), duration_s=3600, rate_scale=0.1, burstiness=0.3, seed=7)
    b = synthesize(curve, _lengths(), duration_s=3600, rate_scale=0.1, burstiness=0.3, seed=7)
    c = synthesize(curve, _lengths(), duration_s=3600, rate_scale=0.1, burstiness=0.3, seed=8)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.arrival_s[:100], c.arrival_s[:100])


def test_mean_rate_matches_curve_times_scale() -> None:
    """Over the whole 14-day curve the mean arrival rate is the curve's mean x rate_scale within 2%."""
    curve = load_rate_curve("servegen-14d")
    trace = synthesize(curve, bundled_trace("azure-conv"), rate_scale=0.01, seed=1)
    assert len(trace) / curve.duration_s == pytest.approx(curve.mean_rate_per_s() * 0.01, rel=0.02)


def test_rate_follows_the_curve_window_by_window() -> None:
    """Per 10-minute window the count tracks the curve (correlation > 0.95)."""
    curve = load_rate_curve("servegen-14d")
    trace = synthesize(curve, _lengths(), duration_s=2 * 86400, rate_scale=0.2, seed=2)
    counts = np.bincount((trace.arrival_s // 600).astype(int), minlength=288)[:288]
    assert np.corrcoef(counts, curve.requests_per_s[:288])[0, 1] > 0.95


def test_start_offsets_into_the_curve() -> None:
    """start_s shifts trace time 0 to that point of the curve; arrivals start at 0."""
    curve = RateCurve(np.array([0.0, 600.0, 1200.0]), np.array([1.0, 1.0, 20.0]), 600.0, "step")
    trace = synthesize(curve, _lengths(), start_s=1200.0, duration_s=600.0, seed=3)
    assert trace.arrival_s.min() >= 0.0
    assert trace.arrival_s.max() < 600.0
    assert len(trace) > 5_000


def test_lengths_are_drawn_as_pairs() -> None:
    """Every synthetic request carries an (input, output) pair that exists in the source trace."""
    trace = synthesize(_flat(50.0), _lengths(), duration_s=600.0, seed=4)
    pairs = set(zip(trace.input_tokens.tolist(), trace.output_tokens.tolist(), strict=True))
    assert pairs == {(100, 7), (2000, 300), (50, 1)}


def test_burstiness_keeps_mean_and_overdisperses() -> None:
    """Burstiness raises the variance of per-minute counts and keeps their mean within 3%."""
    curve = _flat(20.0)
    calm = synthesize(curve, _lengths(), duration_s=86400.0, seed=5)
    bursty = synthesize(curve, _lengths(), duration_s=86400.0, burstiness=0.5, seed=5)
    calm_counts = np.bincount((calm.arrival_s // 60).astype(int))
    bursty_counts = np.bincount((bursty.arrival_s // 60).astype(int))
    assert bursty_counts.mean() == pytest.approx(calm_counts.mean(), rel=0.03)
    assert bursty_counts.var() > 5 * calm_counts.var()


def test_arrivals_are_sorted_and_typed() -> None:
    """The synthetic trace is a valid Trace: sorted float64 times, int64 lengths."""
    trace = synthesize(_flat(5.0), _lengths(), duration_s=1000.0, seed=6)
    assert bool(np.all(np.diff(trace.arrival_s) >= 0))
    assert trace.arrival_s.dtype == np.float64
    assert trace.output_tokens.dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_scale": -1.0}, "rate_scale"),
        ({"burstiness": float("nan")}, "burstiness"),
        ({"duration_s": 0.0}, "duration_s must be positive"),
    ],
)
def test_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    """Negative scale, NaN burstiness and empty durations are rejected by name."""
    with pytest.raises(TraceError, match=message):
        synthesize(_flat(1.0), _lengths(), **kwargs)  # type: ignore[arg-type]
