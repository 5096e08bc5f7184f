"""Scenario files: schema, errors naming file and field, extends, the bundled scenarios."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdscale.controller.lab.scenario import (
    SCENARIO_DIR,
    ScenarioError,
    available_scenarios,
    build_trace,
    load_scenario,
    own_curve,
    resolve_scenarios,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class TestSchema:
    def test_unknown_field_names_file_and_field(self, tmp_path: Path) -> None:
        """A misspelt field is reported with the file and its dotted path."""
        path = _write(tmp_path, "bad", "traffic:\n  rate_scael: 2\n")
        with pytest.raises(ScenarioError) as err:
            load_scenario(path)
        assert str(path) in str(err.value)
        assert "traffic.rate_scael: unknown field" in str(err.value)

    def test_bad_value_names_field(self, tmp_path: Path) -> None:
        """An out-of-range value names the field and the bound."""
        path = _write(tmp_path, "bad", "slo: {ttft_ms: -1}\n")
        with pytest.raises(ScenarioError, match=r"bad.yaml: slo.ttft_ms: Input should be greater than 0"):
            load_scenario(path)

    def test_invalid_yaml_names_line(self, tmp_path: Path) -> None:
        """Broken YAML is reported with file:line:column."""
        path = _write(tmp_path, "bad", "traffic:\n  lengths: [\n")
        with pytest.raises(ScenarioError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
            load_scenario(path)

    def test_static_split_over_budget_rejected(self, tmp_path: Path) -> None:
        """A static split that exceeds the budget is refused."""
        path = _write(tmp_path, "bad", "budget_gpus: 16\nstatic: {prefill: 3, decode: 3}\n")
        with pytest.raises(ScenarioError, match="above budget_gpus"):
            load_scenario(path)

    def test_unknown_policy_params_rejected(self, tmp_path: Path) -> None:
        """Parameters for a policy the bench does not run are refused, naming it."""
        path = _write(tmp_path, "bad", "policy_params: {slow: {headroom: 1.1}}\n")
        with pytest.raises(ScenarioError, match=r"policy_params: unknown policy \['slow'\]"):
            load_scenario(path)

    def test_name_defaults_to_stem(self, tmp_path: Path) -> None:
        """A file without a name takes its stem."""
        assert load_scenario(_write(tmp_path, "my-hour", "tp: 4\n")).name == "my-hour"


class TestExtends:
    def test_extends_merges_and_overrides(self, tmp_path: Path) -> None:
        """A child keeps the parent's fields and overrides nested ones key by key."""
        _write(tmp_path, "base", "traffic: {duration_s: 600, rate_scale: 2}\nstatic: {prefill: 1, decode: 1}\n")
        child = load_scenario(_write(tmp_path, "child", "extends: base\ntraffic: {rate_scale: 3}\nslowdown: 1.2\n"))
        assert (child.traffic.duration_s, child.traffic.rate_scale, child.slowdown) == (600, 3, 1.2)
        assert child.static is None
        assert child.name == "child"

    def test_missing_parent_reported(self, tmp_path: Path) -> None:
        """Extending an unknown scenario names it."""
        with pytest.raises(ScenarioError, match="no scenario 'nope'"):
            load_scenario(_write(tmp_path, "child", "extends: nope\n"))

    def test_cycle_reported(self, tmp_path: Path) -> None:
        """A cycle of extends is an error, not a recursion."""
        _write(tmp_path, "a", "extends: b\n")
        with pytest.raises(ScenarioError, match="cycle"):
            load_scenario(_write(tmp_path, "b", "extends: a\n"))


class TestBundled:
    def test_five_scenarios_validate(self) -> None:
        """The shipped scenario files all load."""
        names = available_scenarios()
        assert {"retail-day", "code-burst", "chat-hour", "fixed-48", "drift"} <= set(names)
        assert [s.name for s in resolve_scenarios("all")] == names

    def test_derived_scenarios(self) -> None:
        """fixed-48 and drift are retail-day with a budget and a slowdown."""
        base, fixed, drift = (load_scenario(SCENARIO_DIR / f"{n}.yaml") for n in ("retail-day", "fixed-48", "drift"))
        assert fixed.budget_gpus == 48
        assert drift.slowdown == 1.2
        assert fixed.traffic == base.traffic == drift.traffic

    def test_unknown_scenario_lists_known(self) -> None:
        """An unknown name lists the available ones."""
        with pytest.raises(ScenarioError, match=r"known: .*retail-day"):
            resolve_scenarios("nope")

    def test_quick_shortens_to_window(self) -> None:
        """--quick replays the scenario's quick window."""
        quick = load_scenario(SCENARIO_DIR / "retail-day.yaml").quick()
        assert quick.traffic.duration_s == 7200
        assert quick.traffic.curve_start_s == 75600


def test_build_trace_deterministic(tmp_path: Path) -> None:
    """The same scenario gives the same trace."""
    sc = load_scenario(_write(tmp_path, "t", "traffic: {duration_s: 120, rate_scale: 0.5}\n"))
    a, b = build_trace(sc), build_trace(sc)
    assert len(a) > 0
    assert (a.arrival_s == b.arrival_s).all()
    assert a.arrival_s[-1] <= 120


class TestTrafficFiles:
    def test_relative_trace_path_resolves_against_the_scenario_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A trace named relative to the scenario is found from any working directory."""
        folder = tmp_path / "scen"
        folder.mkdir()
        (folder / "t.csv").write_text(
            "arrival_s,input_tokens,output_tokens\n" + "".join(f"{i}.0,100,10\n" for i in range(180)), encoding="utf-8"
        )
        path = _write(folder, "mine", "traffic: {lengths: t.csv, rate_curve: own, duration_s: 120}\n")
        monkeypatch.chdir(tmp_path)
        scenario = load_scenario(path)
        assert scenario.traffic.lengths == str(folder / "t.csv")
        assert len(build_trace(scenario).arrival_s) > 0

    def test_own_curve_drops_the_partial_last_minute(self) -> None:
        """One request a second for 150 s: the curve is two full minutes at 1/s, not a third minute at 0.5/s."""
        from tests.simulator.cluster_fixtures import fixed_trace

        curve = own_curve(fixed_trace([float(i) for i in range(150)], prompt=100, output=10))
        assert list(curve.requests_per_s) == [1.0, 1.0]


def test_bad_hardware_file_is_named_under_the_hardware_field(tmp_path: Path) -> None:
    """A scenario's broken hardware file fails the scenario at load, under `hardware:` with the file's own error."""
    (tmp_path / "h.json").write_text('{"format": "pdscale-hardware/v1", "scale": {"decode_kv_eff": "fast"}}')
    path = _write(tmp_path, "y", "hardware: h.json\n")
    with pytest.raises(ScenarioError, match=r"hardware: .*h\.json: scale: decode_kv_eff must be a finite number"):
        load_scenario(path)
