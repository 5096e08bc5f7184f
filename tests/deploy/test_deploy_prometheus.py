"""Prometheus rules: promtool checks and unit tests, known metric names, SLO thresholds from config."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import DEPLOY, catalog, load_render_module, selectors

RULES = DEPLOY / "prometheus" / "rules.yaml"
RULES_TEST = DEPLOY / "prometheus" / "rules_test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; scripts/test.sh installs it)"
)


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=120)


class TestPromtool:
    @needs_promtool
    def test_rules_pass_promtool_check(self) -> None:
        """`promtool check rules` accepts rules.yaml."""
        result = _promtool("check", "rules", str(RULES))
        assert result.returncode == 0, result.stdout + result.stderr

    @needs_promtool
    def test_rule_unit_tests_pass(self) -> None:
        """`promtool test rules` passes every case in rules_test.yaml."""
        result = _promtool("test", "rules", str(RULES_TEST))
        assert result.returncode == 0, result.stdout + result.stderr

    @needs_promtool
    def test_every_alert_has_a_unit_test(self) -> None:
        """Each alerting rule is exercised by at least one alert_rule_test case."""
        tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
        tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
        assert {rule["alert"] for rule in _rules() if "alert" in rule} <= tested


class TestRuleContent:
    def test_rules_query_only_catalogued_metrics(self) -> None:
        """Every selector names a catalogued daemon or engine series, or a recording rule defined here."""
        known = set(catalog().series) | {rule["record"] for rule in _rules() if "record" in rule}
        for rule in _rules():
            for selector in selectors(str(rule["expr"])):
                assert selector.metric in known, f"{rule.get('alert') or rule.get('record')}: {selector.metric}"

    def test_alerts_carry_severity_and_summary(self) -> None:
        """Every alert has a severity label and summary and description annotations."""
        for rule in (r for r in _rules() if "alert" in r):
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]

    def test_slo_bucket_bounds_match_config(self) -> None:
        """The le= bounds of the SLO burn rules are the base config's TTFT and ITL objectives."""
        config = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "config.yaml").read_text(encoding="utf-8"))
        expected = {
            "vllm:time_to_first_token_seconds_bucket": {repr(config["slo"]["ttft_ms"] / 1000), "+Inf"},
            "vllm:inter_token_latency_seconds_bucket": {repr(config["slo"]["itl_ms"] / 1000), "+Inf"},
        }
        seen: dict[str, set[str]] = {name: set() for name in expected}
        for rule in _rules():
            for selector in selectors(str(rule["expr"])):
                if selector.metric in expected:
                    seen[selector.metric] |= {v for label, _, v in selector.matchers if label == "le"}
        assert seen == expected

    def test_slo_error_budget_matches_config_quantile(self) -> None:
        """Burn-rate thresholds use the error budget 1 - slo.quantile."""
        config = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "config.yaml").read_text(encoding="utf-8"))
        budget = round(1 - config["slo"]["quantile"], 6)
        burn_alerts = [r for r in _rules() if "BudgetBurn" in r.get("alert", "")]
        assert len(burn_alerts) == 4
        for rule in burn_alerts:
            assert f"* {budget})" in rule["expr"], rule["alert"]

    def test_multi_window_burn_alerts_need_both_windows(self) -> None:
        """Each burn alert combines a long and a short window with `and`."""
        for rule in (r for r in _rules() if "BudgetBurn" in r.get("alert", "")):
            windows = {s.metric.rsplit("_rate", 1)[1] for s in selectors(rule["expr"])}
            assert windows in ({"1h", "5m"}, {"6h", "30m"}), rule["alert"]
            assert " and" in rule["expr"] or "and\n" in rule["expr"]

    def test_prometheus_rule_overlay_is_up_to_date(self) -> None:
        """The production PrometheusRule is rules.yaml as deploy/render.py generates it."""
        render = load_render_module()
        generated = render.rendered_files()[render.PROMETHEUS_RULE_PATH]
        assert render.PROMETHEUS_RULE_PATH.read_text(encoding="utf-8") == generated
        rule = yaml.safe_load(generated)
        assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
