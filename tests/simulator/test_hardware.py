"""Hardware variants: the simulated replica differs from the controller's profile in shape, validated files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdscale.simulator.hardware import HardwareError, load_hardware
from pdscale.simulator.perf import load_perf_model

BUNDLED = Path(__file__).resolve().parents[2] / "controller" / "bundled" / "scenarios" / "hardware"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hw.json"
    path.write_text(text, encoding="utf-8")
    return path


def test_flat_decode_changes_the_batch_slope_not_only_the_level() -> None:
    """The flat-decode variant's batch-128 step over its batch-1 step is far below the calibrated model's."""
    default = load_perf_model("llama-3.1-70b", 4)
    flat = load_hardware(BUNDLED / "flat-decode.json").perf_model("llama-3.1-70b", 4)
    ratio_default = default.decode_step_ms(128, 128 * 1024.0) / default.decode_step_ms(1, 1024.0)
    ratio_flat = flat.decode_step_ms(128, 128 * 1024.0) / flat.decode_step_ms(1, 1024.0)
    assert ratio_default > 2.0
    assert ratio_flat < 1.7


def test_prefill_knee_changes_long_prompts_only() -> None:
    """Past the 2k-token knee the variant is slower; at 1k tokens it matches the calibrated model."""
    default = load_perf_model("llama-3.1-70b", 4)
    knee = load_hardware(BUNDLED / "prefill-knee.json").perf_model("llama-3.1-70b", 4)
    assert knee.prefill_uniform_ms(1024, 1) == pytest.approx(default.prefill_uniform_ms(1024, 1), rel=0.05)
    assert knee.prefill_uniform_ms(8192, 1) > 1.3 * default.prefill_uniform_ms(8192, 1)


def test_fp8_doubles_kv_capacity() -> None:
    """FP8 weights and KV leave more HBM for KV and halve its bytes per token."""
    default = load_perf_model("llama-3.1-70b", 4)
    fp8 = load_hardware(BUNDLED / "fp8.json").perf_model("llama-3.1-70b", 4)
    assert fp8.kv_bytes_per_token * 2 == default.kv_bytes_per_token
    assert fp8.max_kv_tokens > 2 * default.max_kv_tokens


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"format": "other"}', "format"),
        ('{"format": "pdscale-hardware/v1", "scael": {}}', "unknown field.*scael"),
        ('{"format": "pdscale-hardware/v1", "scale": {"decode_speed": 2}}', "scale.decode_speed: not a coefficient"),
        ('{"format": "pdscale-hardware/v1", "scale": {"decode_kv_eff": -1}}', "decode_kv_eff must be > 0"),
        ('{"format": "pdscale-hardware/v1", "engine": {"max_seqs": 4}}', "engine.max_seqs: unknown limit"),
        ('{"format": "pdscale-hardware/v1", "dtype": "int3"}', "dtype must be one of"),
    ],
)
def test_bad_hardware_file_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    """A malformed hardware file is refused with the file and the field."""
    path = _write(tmp_path, text)
    with pytest.raises(HardwareError, match=message) as err:
        load_hardware(path)
    assert str(path) in str(err.value)


def test_scenario_hardware_is_the_simulated_one_and_the_profile_stays_default() -> None:
    """A scenario's hardware drives the simulator; the controller is still told the builtin profile."""
    from pdscale.controller.lab.bench import scenario_spec
    from pdscale.controller.lab.bench_run import _settings, hardware_perf
    from pdscale.controller.lab.scenario import resolve_scenarios

    (sc,) = resolve_scenarios("retail-day-flat-decode")
    spec = scenario_spec(sc)
    sim = hardware_perf(spec)
    assert sim.decode_step_ms(1, 1024.0) == pytest.approx(15.0, abs=0.5)
    settings = _settings(spec, "slo", {"prefill": 2, "decode": 2})
    assert settings.capacity.profile == "builtin:llama-3.1-70b/tp4"
