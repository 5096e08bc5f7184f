"""deploy/metrics-catalog.yaml is well formed: the daemon engineer implements against it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.deploy.deploy_support import DEPLOY

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _catalog() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "metrics-catalog.yaml").read_text(encoding="utf-8"))
    return data


class TestCatalog:
    def test_daemon_metrics_are_unique_valid_pdscale_names(self) -> None:
        """Daemon metric names are valid, unique and prefixed pdscale_."""
        names = [m["name"] for m in _catalog()["daemon"]]
        assert len(names) == len(set(names))
        assert all(NAME.match(n) and n.startswith("pdscale_") for n in names)

    def test_types_follow_prometheus_naming(self) -> None:
        """Counters end in _total; gauges and histograms do not."""
        for metric in _catalog()["daemon"]:
            assert metric["type"] in {"gauge", "counter", "histogram"}, metric["name"]
            assert metric["name"].endswith("_total") == (metric["type"] == "counter"), metric["name"]

    def test_labels_are_valid_and_values_are_strings(self) -> None:
        """Label names are valid and listed label values are non-empty lists of strings."""
        for metric in _catalog()["daemon"]:
            for label, values in metric["labels"].items():
                assert LABEL.match(label), (metric["name"], label)
                assert label not in {"le", "job", "instance"}, (metric["name"], label)
                assert values is None or (values and all(isinstance(v, str) for v in values)), metric["name"]

    def test_every_daemon_metric_has_help(self) -> None:
        """Each daemon metric documents what it measures."""
        assert all(m["help"].strip() for m in _catalog()["daemon"])

    def test_engine_metrics_are_vllm_names(self) -> None:
        """Engine metrics are valid vLLM metric names."""
        for metric in _catalog()["engine"]:
            assert NAME.match(metric["name"]), metric["name"]
            assert metric["name"].startswith("vllm:"), metric["name"]
