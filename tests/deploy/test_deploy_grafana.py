"""The Grafana dashboard: generated, laid out, and querying only catalogued metrics."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.deploy_support import DEPLOY, Selector, catalog, load_render_module, selectors

DASHBOARD = DEPLOY / "grafana" / "pdscale.json"


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _targets() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in _panels() for target in panel["targets"]]


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [p for p in _panels() if p["title"] == title]
    return panel


def _metrics(panel: dict[str, Any]) -> set[str]:
    return {s.metric for target in panel["targets"] for s in selectors(target["expr"])}


def _plain_values(operator: str, value: str) -> list[str]:
    """Label values a matcher pins down, or [] when it is a pattern or a dashboard variable."""
    if "$" in value or operator in {"!=", "!~"}:
        return []
    if operator == "=~":
        return [] if re.search(r"[.*+?()\[\]{}^\\]", value.replace(".", "")) else value.split("|")
    return [value]


def _label_problems(selector: Selector) -> list[str]:
    _, allowed_labels, allowed_values = catalog().series[selector.metric]
    problems = []
    for label, operator, value in selector.matchers:
        if label not in allowed_labels:
            problems.append(f"{selector.metric} has no label {label}")
            continue
        values = allowed_values.get(label)
        for plain in _plain_values(operator, value) if values is not None else []:
            if plain not in values:
                problems.append(f"{selector.metric}{{{label}}} has no value {plain!r}")
    return problems


class TestQueries:
    def test_every_query_names_a_catalogued_metric(self) -> None:
        """Each selector is a daemon metric from metrics-catalog.yaml or a listed engine metric."""
        for title, expr in _targets():
            found = selectors(expr)
            assert found, f"{title}: no metric in {expr!r}"
            for selector in found:
                assert selector.metric in catalog().series, f"{title}: unknown metric {selector.metric!r}"

    def test_label_names_and_values_exist(self) -> None:
        """Matchers use labels the metric carries and, where the catalog lists them, known values."""
        problems = [p for _, expr in _targets() for s in selectors(expr) for p in _label_problems(s)]
        assert problems == []

    def test_label_check_catches_a_wrong_value(self) -> None:
        """A quantile the daemon does not export is reported."""
        (selector,) = selectors('pdscale_forecast{pool="a", quantile="0.95"}')
        assert _label_problems(selector) == ["pdscale_forecast{quantile} has no value '0.95'"]

    def test_template_variables_query_catalogued_metrics(self) -> None:
        """label_values() variables read labels of catalogued metrics."""
        for variable in _dashboard()["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"])
            assert match, variable["name"]
            (selector,) = selectors(match.group(1))
            assert match.group(2) in catalog().series[selector.metric][1], variable["name"]

    def test_every_daemon_metric_is_shown(self) -> None:
        """Each metric the daemon exports appears on at least one panel."""
        shown = {catalog().series[m][0] for panel in _panels() for m in _metrics(panel)}
        assert catalog().daemon_names - shown == set()


class TestPanels:
    def test_prefill_and_decode_utilisation_are_separate_panels(self) -> None:
        """Prefill and decode utilisation each have their own panel, filtered by phase."""
        prefill, decode = _panel("Prefill utilisation"), _panel("Decode utilisation")
        assert 'phase="prefill"' in prefill["targets"][0]["expr"]
        assert 'phase="decode"' in decode["targets"][0]["expr"]
        assert all('phase="decode"' not in t["expr"] for t in prefill["targets"])

    def test_forecast_panels_show_forecast_and_actual(self) -> None:
        """Demand panels plot pdscale's forecast beside observed demand."""
        for title in (
            "Prefill demand (prompt tokens/s)",
            "Decode concurrency (sequences)",
            "Request rate (requests/s)",
        ):
            assert {"pdscale_forecast", "pdscale_observed_demand"} <= _metrics(_panel(title)), title

    def test_replica_panel_repeats_per_pool(self) -> None:
        """Desired vs actual replicas is one panel per pool, repeated over the pool variable."""
        (panel,) = [p for p in _panels() if p["title"].startswith("Desired vs actual replicas")]
        assert panel["repeat"] == "pool"
        assert {"pdscale_desired_replicas", "pdscale_actual_replicas"} <= _metrics(panel)

    def test_latency_panels_show_the_slo(self) -> None:
        """TTFT and ITL panels plot the configured objective next to observed and predicted latency."""
        assert {"pdscale_slo_ttft_seconds", "pdscale_observed_ttft_seconds"} <= _metrics(_panel("TTFT vs SLO"))
        assert {"pdscale_slo_itl_seconds", "pdscale_observed_itl_seconds"} <= _metrics(_panel("ITL vs SLO"))

    def test_layout_fits_the_grid(self) -> None:
        """Panel ids are unique and every panel fits Grafana's 24-column grid without overlap."""
        panels = _dashboard()["panels"]
        assert len({p["id"] for p in panels}) == len(panels)
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & area, panel["title"]
            cells |= area

    def test_every_target_uses_the_datasource_variable(self) -> None:
        """Targets use the ${datasource} variable, so the dashboard imports into any Grafana."""
        for panel in _panels():
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]

    def test_committed_json_is_up_to_date(self) -> None:
        """deploy/grafana/pdscale.json is what deploy/render.py generates."""
        render = load_render_module()
        assert DASHBOARD.read_text(encoding="utf-8") == render.rendered_files()[render.DASHBOARD_PATH]
