"""Online calibration of the capacity model: observed latency against the model's prediction at the observed load.

Pure (no I/O, no logging): the SLO policy keeps a :class:`CalibrationState` in its own state, updates it each
tick with :func:`update`, applies ``state.correction()`` to the capacity model, and reports ``profile_off``
in its estimates and reasons. A capacity model that also implements :class:`CalibrationSink` (the one
``pdscale.controller.runtime.profile.build_capacity_model``
returns does) is told when the flag changes, so the daemon logs it.

Each factor is an EWMA of the ratio ``observed / predicted`` (the prediction made with the uncorrected profile), clamped
to ``[min_factor, max_factor]``. A factor further than ``off_threshold`` from 1 flags the profile as badly off; the flag
clears only once every factor has stayed within ``off_threshold * clear_ratio`` of 1 for ``clear_after`` updates in a
row (hysteresis and dwell: a factor hovering at the threshold does not flip the flag, and the log line, every few
ticks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, runtime_checkable

from pdscale.controller.core.capacity import Correction

__all__ = [
    "CalibrationReport",
    "CalibrationSettings",
    "CalibrationSink",
    "CalibrationState",
    "has_calibration_sink",
    "update",
]


@dataclass(frozen=True, slots=True)
class CalibrationSettings:
    """How fast and how far the correction may move."""

    alpha: float = 0.2
    min_factor: float = 0.5
    max_factor: float = 2.0
    off_threshold: float = 0.3
    clear_ratio: float = 0.5
    """The flag clears below ``off_threshold * clear_ratio`` (x1.15 for 0.3): hysteresis against flapping."""
    clear_after: int = 20
    """... and only after that many updates in a row there (10 minutes at 30 s ticks)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"calibration alpha must be in (0, 1], got {self.alpha}")
        if not 0.0 < self.min_factor <= 1.0 <= self.max_factor:
            raise ValueError("calibration bounds must satisfy 0 < min_factor <= 1 <= max_factor")
        if self.off_threshold <= 0.0:
            raise ValueError("calibration off_threshold must be > 0")
        if not 0.0 < self.clear_ratio <= 1.0:
            raise ValueError(f"calibration clear_ratio must be in (0, 1], got {self.clear_ratio}")
        if self.clear_after < 1:
            raise ValueError(f"calibration clear_after must be >= 1, got {self.clear_after}")


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """What one update saw: raw ratios (None when there was nothing to compare) and whether the profile is off."""

    prefill_ratio: float | None
    decode_ratio: float | None
    profile_off: bool
    message: str


@dataclass(frozen=True, slots=True)
class CalibrationState:
    """Current correction factors and sample counts; round-trips through plain dicts for policy state."""

    prefill: float = 1.0
    decode: float = 1.0
    prefill_samples: int = 0
    decode_samples: int = 0
    profile_off: bool = False
    inside_streak: int = 0
    """Updates in a row, while ``profile_off``, with every factor inside the clear band."""

    def correction(self) -> Correction:
        """The factors as a capacity-model correction."""
        return Correction(prefill=self.prefill, decode=self.decode)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for ``Proposal.state``."""
        return {
            "prefill": self.prefill,
            "decode": self.decode,
            "prefill_samples": self.prefill_samples,
            "decode_samples": self.decode_samples,
            "profile_off": self.profile_off,
            "inside_streak": self.inside_streak,
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> CalibrationState:
        """Parse ``to_dict`` output; anything malformed starts fresh."""
        if not data:
            return CalibrationState()
        try:
            return CalibrationState(
                prefill=float(data.get("prefill", 1.0)),
                decode=float(data.get("decode", 1.0)),
                prefill_samples=int(data.get("prefill_samples", 0)),
                decode_samples=int(data.get("decode_samples", 0)),
                profile_off=bool(data.get("profile_off", False)),
                inside_streak=int(data.get("inside_streak", 0)),
            )
        except (TypeError, ValueError):
            return CalibrationState()


@runtime_checkable
class CalibrationSink(Protocol):
    """A capacity model that wants to hear when calibration flags its profile (to log it)."""

    def calibration_report(self, report: CalibrationReport, state: CalibrationState) -> None:
        """Called when ``profile_off`` changes."""
        ...


def has_calibration_sink(obj: object) -> TypeGuard[CalibrationSink]:
    """Whether ``obj`` accepts calibration reports."""
    return callable(getattr(obj, "calibration_report", None))


def _step(factor: float, ratio: float | None, s: CalibrationSettings, violated: bool) -> float:
    if ratio is None or not math.isfinite(ratio) or ratio <= 0.0:
        return factor
    target = min(s.max_factor, max(s.min_factor, ratio))
    if violated:  # while the SLO is missed, calibration may only add capacity
        target = max(target, factor)
    return min(s.max_factor, max(s.min_factor, (1.0 - s.alpha) * factor + s.alpha * target))


def update(
    state: CalibrationState,
    settings: CalibrationSettings,
    *,
    prefill_ratio: float | None = None,
    decode_ratio: float | None = None,
    ttft_violated: bool = False,
    itl_violated: bool = False,
) -> tuple[CalibrationState, CalibrationReport]:
    """Move the factors toward this tick's observed / predicted ratios (predictions from the uncorrected profile
    at the observed load; None: nothing to compare this tick).

    ``ttft_violated``/``itl_violated`` (the observed tail misses its target) forbid lowering that factor.
    """

    def usable(r: float | None) -> float | None:
        return r if r is not None and math.isfinite(r) and r > 0.0 else None

    rp, rd = usable(prefill_ratio), usable(decode_ratio)
    prefill = _step(state.prefill, rp, settings, ttft_violated)
    decode = _step(state.decode, rd, settings, itl_violated)
    # Set above the threshold; once set, cleared only after both factors stayed well inside it (hysteresis + dwell).
    off_p = abs(prefill - 1.0) > settings.off_threshold
    off_d = abs(decode - 1.0) > settings.off_threshold
    band = settings.off_threshold * settings.clear_ratio
    inside = abs(prefill - 1.0) <= band and abs(decode - 1.0) <= band
    streak = state.inside_streak + 1 if state.profile_off and inside else 0
    profile_off = off_p or off_d or (state.profile_off and streak < settings.clear_after)
    if not profile_off:
        streak = 0
    parts = []
    if profile_off and abs(prefill - 1.0) > band:
        parts.append(f"prefill times x{prefill:.2f}")
    if profile_off and abs(decode - 1.0) > band:
        parts.append(f"decode times x{decode:.2f}")
    if profile_off and not parts:
        parts.append(f"clearing: factors within {band:.0%} for {streak}/{settings.clear_after} updates")
    message = ("profile off: " + ", ".join(parts)) if parts else ""
    new = CalibrationState(
        prefill=prefill,
        decode=decode,
        prefill_samples=state.prefill_samples + (rp is not None),
        decode_samples=state.decode_samples + (rd is not None),
        profile_off=profile_off,
        inside_streak=streak,
    )
    return new, CalibrationReport(prefill_ratio=rp, decode_ratio=rd, profile_off=new.profile_off, message=message)
