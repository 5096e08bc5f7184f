"""Profile loading (JSON, CSV, builtin, aiconfigurator) and building the capacity model from settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from pdscale.controller.runtime.profile import (
    LoggedCapacityModel,
    ProfileError,
    build_capacity_model,
    capacity_params,
    load_profile,
    profile_to_json,
)
from pdscale.controller.runtime.settings import Settings
from tests.helpers.capacity_profiles import small_profile


def settings(profile: str, params: dict[str, object] | None = None, gpus: int = 4) -> Settings:
    pool = {"gpus_per_replica": gpus, "max_replicas": 4}
    return Settings.model_validate(
        {
            "pools": [{"name": "prefill", "role": "prefill", **pool}, {"name": "decode", "role": "decode", **pool}],
            "capacity": {"profile": profile, "params": params or {}},
        }
    )


class TestJson:
    def test_round_trip(self, tmp_path: Path) -> None:
        """A profile written as pdscale-profile/v1 loads back equal."""
        path = tmp_path / "p.json"
        path.write_text(json.dumps(profile_to_json(small_profile())))
        assert load_profile(str(path)) == small_profile()

    def test_wrong_format_named(self, tmp_path: Path) -> None:
        """A file of another format is rejected naming the 'format' field."""
        path = tmp_path / "p.json"
        path.write_text(json.dumps({**profile_to_json(small_profile()), "format": "other/v9"}))
        with pytest.raises(ProfileError, match="'format'"):
            load_profile(str(path))

    def test_bad_point_named(self, tmp_path: Path) -> None:
        """A non-numeric time names the section, index and field."""
        data = profile_to_json(small_profile())
        data["decode"][3]["time_ms"] = "fast"
        path = tmp_path / "p.json"
        path.write_text(json.dumps(data))
        with pytest.raises(ProfileError, match=r"decode\[3\].*time_ms"):
            load_profile(str(path))

    def test_invalid_json_line(self, tmp_path: Path) -> None:
        """Broken JSON names the file and line."""
        path = tmp_path / "p.json"
        path.write_text('{\n"format": ,\n}')
        with pytest.raises(ProfileError, match=r"p\.json:2"):
            load_profile(str(path))


class TestCsv:
    HEADER = "phase,prompt_tokens,batch,context_tokens,time_ms\n"
    FACTS: ClassVar[dict[str, int]] = {"kv_bytes_per_token": 1000, "max_kv_tokens": 100000, "gpus_per_replica": 4}

    def test_loads_measurements(self, tmp_path: Path) -> None:
        """A user's CSV with the replica facts in params becomes a profile."""
        path = tmp_path / "m.csv"
        path.write_text(self.HEADER + "prefill,1024,1,,120\nprefill,2048,1,,230\ndecode,,32,1000,40\n")
        p = load_profile(str(path), self.FACTS)
        assert p.prefill_ms(1536, 1) == pytest.approx(175.0)
        assert p.gpus_per_replica == 4

    def test_bad_phase_names_line(self, tmp_path: Path) -> None:
        """An unknown phase names the file and line."""
        path = tmp_path / "m.csv"
        path.write_text(self.HEADER + "prefill,1024,1,,120\nencode,1,1,1,1\n")
        with pytest.raises(ProfileError, match=r"m\.csv:3.*phase"):
            load_profile(str(path), self.FACTS)

    def test_missing_facts_named(self, tmp_path: Path) -> None:
        """A CSV without the replica facts in capacity.params says which are missing."""
        path = tmp_path / "m.csv"
        path.write_text(self.HEADER + "prefill,1024,1,,120\n")
        with pytest.raises(ProfileError, match="max_kv_tokens"):
            load_profile(str(path), {"kv_bytes_per_token": 1, "gpus_per_replica": 4})


class TestSpecs:
    def test_builtin(self) -> None:
        """builtin:<model>/tp<N> exports the simulator's model."""
        p = load_profile("builtin:llama-3.1-70b/tp4")
        assert p.gpus_per_replica == 4
        assert p.max_kv_tokens > 100_000

    def test_builtin_unknown_model(self) -> None:
        """An unknown builtin model is a ProfileError naming the spec."""
        with pytest.raises(ProfileError, match="no-such-model"):
            load_profile("builtin:no-such-model/tp4")

    def test_aiconfigurator_needs_package(self) -> None:
        """Without the optional package the error says how to get it or what to do instead."""
        try:
            import aiconfigurator  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            with pytest.raises(ProfileError, match="aiconfigurator"):
                load_profile("aiconfigurator:h100/llama")
        else:
            pytest.skip("aiconfigurator is installed")

    def test_missing_file(self) -> None:
        """A path that does not exist is named."""
        with pytest.raises(ProfileError, match=r"nope\.json"):
            load_profile("nope.json")


class TestBuild:
    def test_from_settings(self) -> None:
        """Settings with a builtin profile build the logging capacity model."""
        model = build_capacity_model(settings("builtin:llama-3.1-70b/tp4", {"itl_headroom": 0.8}))
        assert isinstance(model, LoggedCapacityModel)
        assert model.params.itl_headroom == 0.8

    def test_gpu_mismatch_rejected(self) -> None:
        """Pools whose replica size differs from the profile's are named."""
        with pytest.raises(ProfileError, match="prefill"):
            build_capacity_model(settings("builtin:llama-3.1-70b/tp4", gpus=8))

    def test_unknown_param_named(self) -> None:
        """An unknown capacity.params key is rejected by name."""
        with pytest.raises(ProfileError, match="bogus"):
            capacity_params({"bogus": 1})

    def test_bad_reservation_named(self) -> None:
        """kv_reservation must be one of its values."""
        with pytest.raises(ProfileError, match="kv_reservation"):
            capacity_params({"kv_reservation": "most"})


class TestProfileOffLog:
    def test_repeat_within_an_hour_is_info_and_later_warns_again(self) -> None:
        """The first capacity_profile_off is a WARNING, a repeat within an hour info, one after an hour a WARNING."""
        from structlog.testing import capture_logs

        from pdscale.controller.core.calibration import CalibrationReport, CalibrationState

        now = [0.0]
        model = LoggedCapacityModel(small_profile(), source="p", wall_clock=lambda: now[0])
        off = CalibrationReport(prefill_ratio=1.4, decode_ratio=None, profile_off=True, message="profile off")
        state = CalibrationState(prefill=1.4, profile_off=True)
        with capture_logs() as logs:
            for t in (0.0, 100.0, 3700.0):
                now[0] = t
                model.calibration_report(off, state)
        levels = [e["log_level"] for e in logs if e["event"] == "capacity_profile_off"]
        assert levels == ["warning", "info", "warning"]
