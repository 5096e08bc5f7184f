"""The H100 performance model: fidelity to the measured rows, memory arithmetic, monotonicity, errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pdscale.simulator.perf import PerfModel, PerfModelError, known_models, load_params, load_perf_model
from pdscale.simulator.perf_fit import SET_ASIDE, fit_params, load_calibration_rows, row_errors

# (line, phase) of splitwise_h100_llama2_70b.csv (header = line 1) that contradict their neighbours.
EXPECTED_SET_ASIDE = {
    **{
        (line, phase): "TP2 batch 64: prompt 360 ms < batch 32's 2398 ms, e2e 84 s; 64 x 640 tokens exceed TP2's KV"
        for line in (32, 33, 34, 35, 36)
        for phase in ("prefill", "decode")
    },
    (304, "prefill"): "TP8 512x1, 2048 tokens: 74.1 ms against 50.9-60.4 ms in its 4 identical repeats",
}


class TestFidelity:
    def test_set_aside_rows_are_the_named_ones(self) -> None:
        """The fit leaves out exactly the rows this test names, each with a reason."""
        assert set(SET_ASIDE) == set(EXPECTED_SET_ASIDE)
        assert all(reason for reason in SET_ASIDE.values())

    def test_every_row_is_checked(self) -> None:
        """The error table covers every calibration row in both phases."""
        rows = load_calibration_rows()
        errors = row_errors(load_params(), rows)
        assert len(rows) == 315
        assert len(errors) == 2 * len(rows)

    @pytest.mark.parametrize("phase", ["prefill", "decode"])
    def test_shipped_params_meet_error_bounds(self, phase: str) -> None:
        """Median |relative error| <= 10% and max <= 25% over every row not set aside."""
        errors = [
            e for e in row_errors(load_params()) if e.phase == phase and (e.line, phase) not in EXPECTED_SET_ASIDE
        ]
        abs_err = [abs(e.rel_error) for e in errors]
        worst = max(errors, key=lambda e: abs(e.rel_error))
        assert statistics.median(abs_err) <= 0.10
        assert max(abs_err) <= 0.25, f"line {worst.line}: {worst.measured_ms:.1f} ms vs {worst.predicted_ms:.1f} ms"

    def test_shipped_params_equal_a_fresh_fit(self) -> None:
        """Refitting reproduces the committed coefficients within 2%."""
        fresh = fit_params()["coefficients"]
        shipped = load_params()["coefficients"]
        assert fresh.keys() == shipped.keys()
        for tp, coeffs in fresh.items():
            for name, value in coeffs.items():
                assert shipped[tp][name] == pytest.approx(value, rel=0.02, abs=1e-3), f"tp {tp} {name}"


class TestMemory:
    def test_kv_bytes_per_token_70b(self) -> None:
        """Llama-3.1-70B bf16 holds 2 x 80 layers x 8 heads x 128 dims x 2 bytes = 320 KiB per token."""
        assert load_perf_model("llama-3.1-70b", 4).kv_bytes_per_token == 327_680

    def test_kv_bytes_per_token_8b_fp8(self) -> None:
        """Llama-3.1-8B in fp8 holds 2 x 32 x 8 x 128 x 1 bytes per token."""
        assert load_perf_model("llama-3.1-8b", 1, "fp8").kv_bytes_per_token == 65_536

    def test_max_kv_tokens_formula(self) -> None:
        """max_kv_tokens = (tp x HBM x 0.9 - weights - reserve) / KV bytes per token."""
        params = load_params()
        hbm = params["hardware"]["hbm_bytes"]
        reserve = params["memory"]["activation_reserve_bytes_per_gpu"]
        weights = 70_553_706_496 * 2  # Llama-3.1-70B parameters x bf16
        expected = int((4 * hbm * 0.9 - weights - 4 * reserve) // 327_680)
        assert load_perf_model("llama-3.1-70b", 4).max_kv_tokens == expected

    def test_more_gpus_hold_more_kv(self) -> None:
        """Doubling TP more than doubles the KV room (the weights are paid once)."""
        tp4 = load_perf_model("llama-3.1-70b", 4).max_kv_tokens
        tp8 = load_perf_model("llama-3.1-70b", 8).max_kv_tokens
        assert tp8 > 2 * tp4

    def test_70b_bf16_tp1_does_not_fit(self) -> None:
        """70B bf16 on one H100 raises an error that says it does not fit."""
        with pytest.raises(PerfModelError, match="does not fit on 1"):
            load_perf_model("llama-3.1-70b", 1, "bf16")

    def test_70b_fp8_tp1_fits(self) -> None:
        """70B in fp8 fits on one H100, with a small KV cache."""
        assert 0 < load_perf_model("llama-3.1-70b", 1, "fp8").max_kv_tokens < 100_000

    def test_lower_memory_utilization_holds_less(self) -> None:
        """gpu_memory_utilization shrinks the KV room."""
        full = load_perf_model("llama-3.1-70b", 4).max_kv_tokens
        less = load_perf_model("llama-3.1-70b", 4, gpu_memory_utilization=0.8).max_kv_tokens
        assert less < full


class TestLoading:
    def test_known_models(self) -> None:
        """The shipped parameters describe Llama-3.1 70B and 8B (and the calibration model)."""
        assert {"llama-3.1-70b", "llama-3.1-8b", "llama-2-70b"} <= set(known_models())

    def test_unknown_model(self) -> None:
        """An unknown model name lists the known ones."""
        with pytest.raises(PerfModelError, match=r"known models: .*llama-3\.1-70b"):
            load_perf_model("gpt-9")

    def test_unknown_dtype(self) -> None:
        """An unknown dtype is rejected by name."""
        with pytest.raises(PerfModelError, match="dtype 'int3'"):
            load_perf_model(dtype="int3")

    def test_bad_tp(self) -> None:
        """Only TP 1, 2, 4 and 8 are modelled."""
        with pytest.raises(PerfModelError, match="1, 2, 4 or 8"):
            load_perf_model(tp=3)

    def test_unmeasured_tp_uses_nearest_measured_efficiencies(self) -> None:
        """TP1 (8B) uses the TP2 efficiencies: its per-token prefill cost is exactly twice TP2's."""
        tp1 = load_perf_model("llama-3.1-8b", 1)
        tp2 = load_perf_model("llama-3.1-8b", 2)
        assert tp1.prefill_ms_per_token == pytest.approx(2 * tp2.prefill_ms_per_token)

    def test_invalid_json_names_file_and_line(self, tmp_path: Path) -> None:
        """A broken parameter file is reported with its path and line."""
        bad = tmp_path / "p.json"
        bad.write_text('{\n"hardware": ,\n}', encoding="utf-8")
        with pytest.raises(PerfModelError, match=r"p\.json:2: invalid JSON"):
            load_perf_model(params_path=bad)

    def test_missing_coefficient_is_named(self, tmp_path: Path) -> None:
        """A parameter file without a coefficient names the missing one."""
        params = load_params()
        params.pop("_path")
        del params["coefficients"]["4"]["decode_ms_per_seq"]
        path = tmp_path / "p.json"
        path.write_text(json.dumps(params), encoding="utf-8")
        with pytest.raises(PerfModelError, match="missing decode_ms_per_seq"):
            load_perf_model(tp=4, params_path=path)


@pytest.fixture(params=[("llama-3.1-70b", 2), ("llama-3.1-70b", 4), ("llama-3.1-70b", 8), ("llama-3.1-8b", 1)])
def perf(request: pytest.FixtureRequest) -> PerfModel:
    model, tp = request.param
    return load_perf_model(model, tp)


class TestMonotonic:
    def test_prefill_more_tokens_never_faster(self, perf: PerfModel) -> None:
        """Prefill time does not decrease with prompt length (batch 1) or batch size."""
        lengths = [2**k for k in range(4, 16)]
        times = [perf.prefill_uniform_ms(n, 1) for n in lengths]
        assert times == sorted(times)
        batches = [perf.prefill_uniform_ms(512, b) for b in range(1, 65)]
        assert batches == sorted(batches)

    def test_decode_more_batch_or_context_never_faster(self, perf: PerfModel) -> None:
        """Decode step time does not decrease with batch (fixed context each) or total context."""
        by_batch = [perf.decode_step_ms(b, b * 1024.0) for b in range(1, 513)]
        assert by_batch == sorted(by_batch)
        by_context = [perf.decode_step_ms(32, 32.0 * c) for c in range(128, 32768, 512)]
        assert by_context == sorted(by_context)

    def test_empty_work_takes_no_time(self, perf: PerfModel) -> None:
        """No tokens to prefill and no sequences to decode cost nothing."""
        assert perf.prefill_ms(0.0, 0.0, 0) == 0.0
        assert perf.decode_step_ms(0, 0.0) == 0.0

    def test_uniform_prefill_matches_general_form(self, perf: PerfModel) -> None:
        """prefill_uniform_ms(L, b) == prefill_ms(L*b, L^2*b, b)."""
        assert perf.prefill_uniform_ms(1000, 3) == perf.prefill_ms(3000.0, 3.0e6, 3)

    def test_long_prompts_cost_more_than_the_same_tokens_short(self, perf: PerfModel) -> None:
        """Attention makes one 8192-token prompt slower than 16 prompts of 512 tokens."""
        assert perf.prefill_uniform_ms(8192, 1) > perf.prefill_uniform_ms(512, 16)


class TestScaled:
    def test_scaled_multiplies_every_time(self) -> None:
        """scaled(1.2) makes every prefill and decode time 20% longer."""
        base = load_perf_model("llama-3.1-70b", 4)
        slow = base.scaled(1.2)
        assert slow.prefill_uniform_ms(3000, 2) == pytest.approx(1.2 * base.prefill_uniform_ms(3000, 2))
        assert slow.decode_step_ms(64, 90_000.0) == pytest.approx(1.2 * base.decode_step_ms(64, 90_000.0))
        assert slow.slowdown == pytest.approx(1.2)
        assert slow.max_kv_tokens == base.max_kv_tokens

    def test_scaled_rejects_non_positive(self) -> None:
        """A zero or negative slowdown is an error."""
        with pytest.raises(PerfModelError, match="slowdown"):
            load_perf_model().scaled(0.0)
