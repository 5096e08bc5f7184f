"""Settings: a YAML file becomes a validated model, and a broken one gives a precise error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pdscale.controller.runtime.settings import SecretRef, SettingsError, load_settings, parse_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "simulator.yaml"


def minimal() -> dict[str, object]:
    return {"pools": [{"name": "prefill", "role": "prefill", "gpus_per_replica": 4, "max_replicas": 4}]}


class TestLoad:
    def test_example_config_is_valid(self) -> None:
        """The documented example loads and names two pools."""
        settings = load_settings(EXAMPLE)
        assert [p.name for p in settings.pools] == ["prefill", "decode"]
        assert settings.slo.to_slo().ttft_ms == 1000

    def test_unknown_field_names_file_and_path(self, tmp_path: Path) -> None:
        """A misspelt field is reported with the file and its dotted path."""
        data = minimal()
        data["pools"][0]["max_replica"] = 3  # type: ignore[index]
        f = tmp_path / "bad.yaml"
        f.write_text(yaml.safe_dump(data))
        with pytest.raises(SettingsError, match=r"bad\.yaml: pools\.0\.max_replica: unknown field"):
            load_settings(f)

    def test_wrong_type_names_field(self) -> None:
        """A value of the wrong type names the field and the problem."""
        data = minimal()
        data["tick_s"] = "often"
        with pytest.raises(SettingsError, match=r"cfg\.yaml: tick_s: Input should be a valid number"):
            parse_settings(data, "cfg.yaml")

    def test_unknown_fit_mode_lists_the_choices(self) -> None:
        """forecasting.fits must be inline, thread or process; anything else is named with the choices."""
        data = minimal()
        data["forecasting"] = {"model": "ensemble", "fits": "gpu"}
        with pytest.raises(SettingsError, match=r"cfg\.yaml: forecasting\.fits: .*'inline', 'thread' or 'process'"):
            parse_settings(data, "cfg.yaml")

    def test_invalid_yaml_reports_line(self, tmp_path: Path) -> None:
        """Broken YAML syntax is reported with file, line and column."""
        f = tmp_path / "broken.yaml"
        f.write_text("pools:\n  - name: [unclosed\n")
        with pytest.raises(SettingsError, match=r"broken\.yaml:\d+:\d+: invalid YAML"):
            load_settings(f)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a SettingsError naming it."""
        with pytest.raises(SettingsError, match="cannot read settings file"):
            load_settings(tmp_path / "nope.yaml")

    def test_min_above_max_rejected(self) -> None:
        """min_replicas above max_replicas is rejected."""
        data = minimal()
        data["pools"][0]["min_replicas"] = 9  # type: ignore[index]
        with pytest.raises(SettingsError, match="min_replicas"):
            parse_settings(data)

    def test_duplicate_pool_names_rejected(self) -> None:
        """Two pools with one name are rejected."""
        data = minimal()
        data["pools"] = [data["pools"][0], data["pools"][0]]  # type: ignore[index]
        with pytest.raises(SettingsError, match="repeated: prefill"):
            parse_settings(data)

    def test_budget_below_minimums_rejected(self) -> None:
        """A budget that cannot hold the pools' minimums is rejected."""
        data = minimal()
        data["budget"] = {"max_gpus": 2}
        with pytest.raises(SettingsError, match=r"below the pools' minimum \(4 GPUs\)"):
            parse_settings(data)

    def test_top_level_must_be_mapping(self) -> None:
        """A YAML list at the top is rejected with a clear message."""
        with pytest.raises(SettingsError, match="top level must be a mapping"):
            parse_settings([1, 2], "x.yaml")  # type: ignore[arg-type]


class TestSecrets:
    def test_secret_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An env secret resolves to the variable's value."""
        monkeypatch.setenv("PDSCALE_TEST_TOKEN", "s3cret\n")
        assert SecretRef(env="PDSCALE_TEST_TOKEN").resolve() == "s3cret"

    def test_secret_from_file(self, tmp_path: Path) -> None:
        """A file secret resolves to the file's stripped content."""
        f = tmp_path / "token"
        f.write_text("abc\n")
        assert SecretRef(file=f).resolve() == "abc"

    def test_unset_secret_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unset env secret raises naming the variable."""
        monkeypatch.delenv("PDSCALE_NOPE", raising=False)
        with pytest.raises(SettingsError, match="PDSCALE_NOPE"):
            SecretRef(env="PDSCALE_NOPE").resolve()


class TestHostileFiles:
    def test_empty_token_file_is_refused(self, tmp_path: Path) -> None:
        """An empty secret file is an error, never an empty token that turns authentication off."""
        f = tmp_path / "token"
        f.write_text("\n")
        with pytest.raises(SettingsError, match="is empty"):
            SecretRef(file=f).resolve()

    def test_duplicate_key_is_refused_with_both_lines(self, tmp_path: Path) -> None:
        """A key given twice is an error naming the key, not a silent last-wins."""
        path = tmp_path / "s.yaml"
        path.write_text(EXAMPLE.read_text() + "\ntick_s: 1\ntick_s: 2\n")
        with pytest.raises(SettingsError, match="duplicate key 'tick_s'"):
            load_settings(path)

    def test_infinite_stale_window_is_refused(self) -> None:
        """`stale_after_s: .inf` would disable the stale-data hold: refused, naming the field."""
        import yaml

        data = yaml.safe_load(EXAMPLE.read_text())
        data.setdefault("guards", {})["stale_after_s"] = float("inf")
        with pytest.raises(SettingsError, match="stale_after_s"):
            parse_settings(data, "x.yaml")


def test_removed_exporter_listen_says_it_is_no_longer_supported() -> None:
    """simulator.exporter_listen, never used, is refused with a line saying to delete it."""
    data = minimal()
    data["simulator"] = {"exporter_listen": "127.0.0.1:9400"}
    with pytest.raises(SettingsError, match=r"cfg\.yaml: simulator\.exporter_listen: no longer supported"):
        parse_settings(data, "cfg.yaml")


def test_tick_s_has_a_lower_bound() -> None:
    """tick_s below 50 ms (e.g. the 0.001 that allocated 9 GiB) is refused."""
    for tick in (0.001, 0.0):
        with pytest.raises(SettingsError, match="tick_s"):
            parse_settings({"tick_s": tick, "pools": [{"name": "p", "role": "prefill"}]}, "t")


def test_tick_s_has_an_upper_bound() -> None:
    """tick_s above an hour (or .inf) is refused."""
    for tick in (3601, float("inf")):
        with pytest.raises(SettingsError, match="tick_s"):
            parse_settings({"tick_s": tick, "pools": [{"name": "p", "role": "prefill"}]}, "t")
