"""Online calibration's profile-off flag: set above the threshold, cleared only well inside it."""

from __future__ import annotations

from pdscale.controller.core.calibration import CalibrationSettings, CalibrationState, update

SETTINGS = CalibrationSettings(alpha=0.2, off_threshold=0.3)  # clear_ratio: its default 0.5


def test_factor_hovering_at_the_threshold_flags_once() -> None:
    """A prefill factor oscillating around x1.30 sets the flag once and does not flap."""
    state = CalibrationState(prefill=1.30)
    flags = []
    for k in range(60):
        state, _ = update(state, SETTINGS, prefill_ratio=1.36 if k % 2 == 0 else 1.24)
        flags.append(state.profile_off)
    assert 1.28 < state.prefill < 1.32
    transitions = sum(a != b for a, b in zip([False, *flags], flags, strict=False))
    assert transitions == 1


def test_flag_clears_only_after_dwelling_inside_the_clear_band() -> None:
    """Once off, the flag stays while the factor is above x1.15 and clears 20 updates after it went below."""
    state = CalibrationState(prefill=1.5, profile_off=True)
    seen = []
    for _ in range(60):
        state, _ = update(state, SETTINGS, prefill_ratio=1.0)
        seen.append((state.prefill, state.profile_off))
    assert any(1.15 < f <= 1.30 for f, _ in seen)
    first_inside = next(k for k, (f, _) in enumerate(seen) if f <= 1.0 + 0.3 * 0.5)
    assert all(off for _, off in seen[: first_inside + 19])
    assert not any(off for _, off in seen[first_inside + 19 :])


def test_dip_into_the_band_shorter_than_the_dwell_keeps_the_flag() -> None:
    """A factor that dips below x1.15 for a few updates and comes back does not clear the flag."""
    state = CalibrationState(prefill=1.31, profile_off=True)
    lowest = state.prefill
    for k in range(60):
        state, _ = update(state, SETTINGS, prefill_ratio=1.0 if k % 10 < 5 else 1.45)
        lowest = min(lowest, state.prefill)
        assert state.profile_off
    assert lowest < 1.0 + 0.3 * 0.5
