"""Loading performance profiles and building the capacity model from settings (the I/O side of capacity).

``capacity.profile`` in the settings file is one of:

- a JSON file in the ``pdscale-profile/v1`` format (written by ``pdscale.simulator.profile``)::

    {"format": "pdscale-profile/v1", "model": ..., "tp": 4, "dtype": "bf16", "gpus_per_replica": 4,
     "kv_bytes_per_token": ..., "max_kv_tokens": ...,
     "prefill": [{"prompt_tokens", "batch", "time_ms"}, ...],
     "decode": [{"batch", "context_tokens", "time_ms"}, ...]}      # context_tokens per sequence

- a CSV of a user's own measurements with header ``phase,prompt_tokens,batch,context_tokens,time_ms``
  (phase ``prefill`` or ``decode``); replica facts (``kv_bytes_per_token``, ``max_kv_tokens``,
  ``gpus_per_replica``) then come from ``capacity.params``;
- ``builtin:<model>/tp<N>[/<dtype>]``: pdscale's simulator performance model exported as a profile;
- ``aiconfigurator:...``: needs the optional ``aiconfigurator`` package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from pdscale.controller.core.calibration import CalibrationReport, CalibrationState
from pdscale.controller.core.capacity import (
    CapacityParams,
    DecodePoint,
    KvReservation,
    PrefillPoint,
    Profile,
    ProfileCapacityModel,
)
from pdscale.controller.runtime.settings import Settings
from pdscale.profiles import (
    PROFILE_FACTS,
    ProfileData,
    ProfileError,
    parse_profile_json,
    read_profile_csv,
    read_profile_json,
)

__all__ = [
    "WARN_EVERY_S",
    "LoggedCapacityModel",
    "ProfileError",
    "build_capacity_model",
    "capacity_params",
    "load_profile",
    "profile_from_dict",
    "profile_from_perf",
    "profile_to_json",
]

log = structlog.get_logger(__name__)

PREFILL_GRID_TOKENS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
PREFILL_GRID_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)
DECODE_GRID_BATCH = (1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 384, 512)
DECODE_GRID_CONTEXT = (0, 128, 256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 16384, 32768)


def _num(where: str, field: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ProfileError(f"{where}: field {field!r} must be a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ProfileError(f"{where}: field {field!r} must be a number, got {value!r}") from None
    if integer and out != int(out):
        raise ProfileError(f"{where}: field {field!r} must be an integer, got {value!r}")
    return out


def _profile(data: ProfileData) -> Profile:
    return Profile(
        model=data.model,
        tp=data.tp,
        dtype=data.dtype,
        gpus_per_replica=data.gpus_per_replica,
        kv_bytes_per_token=data.kv_bytes_per_token,
        max_kv_tokens=data.max_kv_tokens,
        prefill=data.prefill,
        decode=data.decode,
    )


def profile_from_dict(data: Any, path: str = "<profile>") -> Profile:
    """A profile from its ``pdscale-profile/v1`` JSON object; errors name ``path`` and the field."""
    return _profile(parse_profile_json(data, path))


def _load_csv(path: Path, params: Mapping[str, Any]) -> Profile:
    missing = [k for k in PROFILE_FACTS if k not in params]
    if missing:
        raise ProfileError(
            f"{path}: a CSV profile needs capacity.params {', '.join(missing)} (the replica's facts are not in the CSV)"
        )
    return _profile(read_profile_csv(path, {k: params[k] for k in PROFILE_FACTS}))


def profile_from_perf(perf: Any) -> Profile:
    """Sample a performance model with ``prefill_ms``/``decode_step_ms`` (``simulator.perf.PerfModel``) on a grid."""
    prefill = [
        PrefillPoint(prompt_tokens=n, batch=b, time_ms=float(perf.prefill_ms(float(n * b), float(n) ** 2 * b, b)))
        for n in PREFILL_GRID_TOKENS
        for b in PREFILL_GRID_BATCH
    ]
    decode = [
        DecodePoint(batch=b, context_tokens=c, time_ms=float(perf.decode_step_ms(b, float(b * c))))
        for b in DECODE_GRID_BATCH
        for c in DECODE_GRID_CONTEXT
    ]
    return Profile(
        model=str(perf.model),
        tp=int(getattr(perf, "tp", perf.gpus_per_replica)),
        dtype=str(getattr(perf, "dtype", "bf16")),
        gpus_per_replica=int(perf.gpus_per_replica),
        kv_bytes_per_token=int(perf.kv_bytes_per_token),
        max_kv_tokens=int(perf.max_kv_tokens),
        prefill=tuple(prefill),
        decode=tuple(decode),
    )


def _load_builtin(spec: str) -> Profile:
    body = spec.removeprefix("builtin:")
    parts = body.split("/")
    if len(parts) not in (2, 3) or not parts[1].startswith("tp") or not parts[1][2:].isdigit():
        raise ProfileError(f"capacity.profile: {spec!r} must look like 'builtin:<model>/tp<N>[/<dtype>]'")
    from pdscale.simulator.perf import PerfModelError, load_perf_model  # noqa: PLC0415 - the one allowed crossing
    from pdscale.simulator.profile import profile_dict  # noqa: PLC0415

    try:
        perf = load_perf_model(parts[0], int(parts[1][2:]), parts[2] if len(parts) == 3 else "bf16")
    except PerfModelError as exc:
        raise ProfileError(f"capacity.profile: {spec!r}: {exc}") from None
    return profile_from_dict(profile_dict(perf), spec)


def _load_aiconfigurator(spec: str) -> Profile:
    try:
        import aiconfigurator  # type: ignore[import-not-found]  # noqa: F401, PLC0415
    except ImportError:
        raise ProfileError(
            f"capacity.profile: {spec!r} needs the optional 'aiconfigurator' package (pip install aiconfigurator); "
            "or export its estimates to a CSV profile (phase,prompt_tokens,batch,context_tokens,time_ms)"
        ) from None
    raise ProfileError(
        f"capacity.profile: {spec!r}: reading AIConfigurator databases directly is not supported; export its "
        "estimates to a CSV profile (phase,prompt_tokens,batch,context_tokens,time_ms) and point capacity.profile at it"
    )


def load_profile(spec: str, params: Mapping[str, Any] | None = None) -> Profile:
    """A profile from a JSON or CSV file, ``builtin:<model>/tp<N>``, or ``aiconfigurator:...``."""
    params = params or {}
    if spec.startswith("builtin:"):
        return _load_builtin(spec)
    if spec.startswith("aiconfigurator:"):
        return _load_aiconfigurator(spec)
    path = Path(spec)
    if not path.is_file():
        raise ProfileError(f"capacity.profile: {spec}: no such file")
    if path.suffix.lower() == ".csv":
        return _load_csv(path, params)
    return _profile(read_profile_json(path))


def profile_to_json(profile: Profile) -> dict[str, Any]:
    """The ``pdscale-profile/v1`` JSON form of a profile."""
    facts = ("model", "tp", "dtype", "gpus_per_replica", "kv_bytes_per_token", "max_kv_tokens", "prefill", "decode")
    return ProfileData(**{k: getattr(profile, k) for k in facts}).to_json()


_PARAM_TYPES: dict[str, type] = {
    "token_budget": int,
    "colocated_token_budget": int,
    "max_running_seqs": int,
    "max_utilization": float,
    "arrival_cv2": float,
    "itl_headroom": float,
    "kv_reservation": str,
    "kv_link_bytes_per_s_per_gpu": float,
    "default_isl_tokens": float,
    "default_osl_tokens": float,
    "ttft_over_prompt_mix": bool,
}


def capacity_params(params: Mapping[str, Any]) -> CapacityParams:
    """``capacity.params`` as CapacityParams; unknown or ill-typed entries raise ProfileError naming them."""
    known = set(_PARAM_TYPES) | set(PROFILE_FACTS)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ProfileError(f"capacity.params: unknown parameter(s) {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for key, typ in _PARAM_TYPES.items():
        if key not in params:
            continue
        value = params[key]
        if typ is bool:
            if not isinstance(value, bool):
                raise ProfileError(f"capacity.params.{key}: must be true or false, got {value!r}")
            kwargs[key] = value
            continue
        if typ is str:
            try:
                kwargs[key] = KvReservation(str(value))
            except ValueError:
                raise ProfileError(
                    f"capacity.params.{key}: must be one of {[k.value for k in KvReservation]}, got {value!r}"
                ) from None
            continue
        kwargs[key] = typ(_num(f"capacity.params.{key}", key, value, integer=typ is int))
    try:
        return CapacityParams(**kwargs)
    except ValueError as exc:
        raise ProfileError(str(exc)) from None


WARN_EVERY_S = 3600.0
"""A profile found off again within this many wall seconds of the last WARNING is logged at info."""


class LoggedCapacityModel(ProfileCapacityModel):
    """The capacity model the daemon uses: logs when online calibration finds the profile badly off.

    The first ``capacity_profile_off`` is a WARNING (re-measure the profile: the controller corrects it online, but
    sized from a wrong profile until then); the flag has hysteresis (``calibration.clear_ratio``), and a repeat
    within ``WARN_EVERY_S`` wall seconds is logged at info with ``repeat=True``."""

    def __init__(
        self,
        profile: Profile,
        params: CapacityParams | None = None,
        source: str = "",
        *,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(profile, params)
        self.source = source
        self._wall_clock = wall_clock
        self._warned_at: float | None = None

    def calibration_report(self, report: CalibrationReport, state: CalibrationState) -> None:
        """Log a change of the profile-off flag (called by the SLO policy)."""
        if report.profile_off:
            now = self._wall_clock()
            repeat = self._warned_at is not None and now - self._warned_at < WARN_EVERY_S
            if not repeat:
                self._warned_at = now
            (log.info if repeat else log.warning)(
                "capacity_profile_off",
                profile=self.source,
                prefill_factor=round(state.prefill, 3),
                decode_factor=round(state.decode, 3),
                detail=report.message,
                repeat=repeat,
            )
        else:
            log.info(
                "capacity_profile_ok",
                profile=self.source,
                prefill_factor=round(state.prefill, 3),
                decode_factor=round(state.decode, 3),
            )


def build_capacity_model(settings: Settings) -> ProfileCapacityModel:
    """The capacity model for ``settings.capacity`` (called by pdscale.controller.runtime.assembly)."""
    if settings.capacity.profile is None:
        raise ProfileError("capacity.profile is not set")
    params = capacity_params(settings.capacity.params)
    spec = settings.capacity.profile
    if spec == "builtin":
        gpus = {p.gpus_per_replica for p in settings.pools}
        spec = f"builtin:{settings.model}/tp{min(gpus)}"
    profile = load_profile(spec, settings.capacity.params)
    mismatched = [p.name for p in settings.pools if p.gpus_per_replica != profile.gpus_per_replica]
    if mismatched:
        raise ProfileError(
            f"capacity.profile: {spec}: profiled replicas have {profile.gpus_per_replica} GPUs but pool(s) "
            f"{', '.join(mismatched)} declare a different gpus_per_replica"
        )
    return LoggedCapacityModel(profile, params, source=spec)
