"""Generate pdscale's derived deploy artefacts from their sources.

- deploy/grafana/pdscale.json: the Grafana dashboard, built from the panel list below.
- deploy/kubernetes/overlays/production/prometheusrule.yaml: deploy/prometheus/rules.yaml wrapped in a
  Prometheus Operator PrometheusRule.

Run `python deploy/render.py` after editing either source; `python deploy/render.py --check` exits 1
when a generated file is out of date (tests/deploy runs the same check).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DASHBOARD_PATH",
    "PROMETHEUS_RULE_PATH",
    "Panel",
    "Query",
    "build_dashboard",
    "build_prometheus_rule",
    "main",
    "rendered_files",
]

DEPLOY_DIR = Path(__file__).resolve().parent
DASHBOARD_PATH = DEPLOY_DIR / "grafana" / "pdscale.json"
RULES_PATH = DEPLOY_DIR / "prometheus" / "rules.yaml"
PROMETHEUS_RULE_PATH = DEPLOY_DIR / "kubernetes" / "overlays" / "production" / "prometheusrule.yaml"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Daemon series: one pdscale instance (scrape job) per served model.
D = 'job=~"$job"'
# Engine series: relabelled by the engine PodMonitor with pool and role.
E = 'model_name=~"$model", pool=~"$pool"'
RATE = "$__rate_interval"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    """One dashboard panel; width and height are in Grafana grid units (24 columns)."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    max_value: float | None = None
    repeat_by_pool: bool = False
    bars: bool = False


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Controller",
        (
            Panel("Up", (Query(f"min(pdscale_up{{{D}}})", "up"),), kind="stat", width=4, height=4),
            # Daemons actuating: 1 with leader election working; 0 (none elected) or 2 (two actuate) need a look.
            Panel("Leaders", (Query(f"sum(pdscale_leader{{{D}}})", "leaders"),), kind="stat", width=4, height=4),
            Panel(
                "Paused pools",
                (Query(f"sum(pdscale_paused{{{D}}})", "paused"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Pools holding on missing metrics",
                (Query(f"sum(pdscale_metrics_missing{{{D}}})", "missing"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "GPUs allocated / budget",
                (Query(f"max(pdscale_gpus_allocated{{{D}}}) / max(pdscale_gpu_budget{{{D}}})", "used"),),
                unit="percentunit",
                kind="gauge",
                width=4,
                height=4,
                max_value=1.0,
            ),
            Panel(
                "SLO attainment",
                (Query(f"min(pdscale_slo_attainment_ratio{{{D}}})", "worst pool"),),
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Tick duration",
                (
                    Query(
                        f"histogram_quantile(0.5, sum by (le) "
                        f"(rate(pdscale_tick_duration_seconds_bucket{{{D}}}[{RATE}])))",
                        "p50",
                    ),
                    Query(
                        f"histogram_quantile(0.99, sum by (le) "
                        f"(rate(pdscale_tick_duration_seconds_bucket{{{D}}}[{RATE}])))",
                        "p99",
                    ),
                ),
                unit="s",
                kind="stat",
                width=4,
                height=4,
            ),
        ),
    ),
    (
        "Replicas and GPUs",
        (
            Panel(
                "Desired vs actual replicas: $pool",
                (
                    Query(f'pdscale_desired_replicas{{{D}, pool=~"$pool"}}', "desired"),
                    Query(
                        f'sum by (state) (pdscale_actual_replicas{{{D}, pool=~"$pool"}})',
                        "actual {{state}}",
                    ),
                ),
                description="Desired is pdscale's target after guards; actual is what the actuator "
                "reports, by lifecycle state.",
                width=8,
                repeat_by_pool=True,
            ),
            Panel(
                "GPUs allocated vs budget",
                (
                    Query(f"pdscale_gpus_allocated{{{D}}}", "allocated"),
                    Query(f"pdscale_gpu_budget{{{D}}}", "budget"),
                ),
                width=24,
            ),
        ),
    ),
    (
        "Utilisation",
        (
            Panel(
                "Prefill utilisation",
                (
                    Query(
                        f'pdscale_utilization_ratio{{{D}, phase="prefill", pool=~"$pool"}}',
                        "{{pool}}",
                    ),
                ),
                unit="percentunit",
                max_value=1.0,
                description="Busy fraction of prefill compute capacity.",
            ),
            Panel(
                "Decode utilisation",
                (
                    Query(
                        f'pdscale_utilization_ratio{{{D}, phase="decode", pool=~"$pool"}}',
                        "{{pool}}",
                    ),
                    Query(f'pdscale_kv_usage_ratio{{{D}, pool=~"$pool"}}', "{{pool}} KV share"),
                    Query(
                        f'avg by (pool) (vllm:kv_cache_usage_perc{{{E}, role="decode"}})',
                        "{{pool}} KV cache (engine)",
                    ),
                ),
                unit="percentunit",
                max_value=1.0,
                description="Compute-busy share of decode (busy time over serving time), with the KV-cache share "
                "pdscale saw and the engines' own KV cache use: a pool can be busy with little KV in use.",
            ),
        ),
    ),
    (
        "Demand: forecast vs actual",
        (
            Panel(
                "Prefill demand (prompt tokens/s)",
                (
                    Query(
                        f'pdscale_forecast{{{D}, pool=~"$pool", signal="prefill_tps", quantile=~"mean|0.9"}}',
                        "{{pool}} forecast {{quantile}}",
                    ),
                    Query(
                        f'pdscale_observed_demand{{{D}, pool=~"$pool", signal="prefill_tps"}}',
                        "{{pool}} observed",
                    ),
                    Query(
                        f'sum by (pool) (rate(vllm:prompt_tokens_total{{{E}, role="prefill"}}[{RATE}]))',
                        "{{pool}} engines",
                    ),
                ),
            ),
            Panel(
                "Request rate (requests/s)",
                (
                    Query(
                        f'pdscale_forecast{{{D}, pool=~"$pool", signal="request_rate", quantile=~"mean|0.9"}}',
                        "{{pool}} forecast {{quantile}}",
                    ),
                    Query(
                        f'pdscale_observed_demand{{{D}, pool=~"$pool", signal="request_rate"}}',
                        "{{pool}} observed",
                    ),
                    Query(
                        f"sum by (pool) (rate(vllm:request_success_total{{{E}}}[{RATE}]))",
                        "{{pool}} completed (engines)",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Decode concurrency (sequences)",
                (
                    Query(
                        f'pdscale_forecast{{{D}, pool=~"$pool", signal="decode_concurrency", quantile=~"mean|0.9"}}',
                        "{{pool}} forecast {{quantile}}",
                    ),
                    Query(
                        f'pdscale_observed_demand{{{D}, pool=~"$pool", signal="decode_concurrency"}}',
                        "{{pool}} observed",
                    ),
                    Query(
                        f'sum by (pool) (vllm:num_requests_running{{{E}, role="decode"}})',
                        "{{pool}} running (engines)",
                    ),
                ),
            ),
            Panel(
                "KV cache demand (tokens)",
                (
                    Query(
                        f'pdscale_forecast{{{D}, pool=~"$pool", signal="kv_tokens", quantile=~"mean|0.9"}}',
                        "{{pool}} forecast {{quantile}}",
                    ),
                    Query(
                        f'pdscale_observed_demand{{{D}, pool=~"$pool", signal="kv_tokens"}}',
                        "{{pool}} observed",
                    ),
                ),
            ),
        ),
    ),
    (
        "Latency vs SLO",
        (
            Panel(
                "TTFT vs SLO",
                (
                    Query(f"max(pdscale_slo_ttft_seconds{{{D}}})", "SLO"),
                    Query(
                        f'pdscale_observed_ttft_seconds{{{D}, pool=~"$pool", quantile="0.99"}}',
                        "{{pool}} observed p99",
                    ),
                    Query(
                        f'pdscale_predicted_ttft_seconds{{{D}, pool=~"$pool"}}',
                        "{{pool}} predicted",
                    ),
                    Query(
                        f"histogram_quantile(0.99, sum by (le, role) "
                        f"(rate(vllm:time_to_first_token_seconds_bucket{{{E}}}[{RATE}])))",
                        "{{role}} engines p99",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "ITL vs SLO",
                (
                    Query(f"max(pdscale_slo_itl_seconds{{{D}}})", "SLO"),
                    Query(
                        f'pdscale_observed_itl_seconds{{{D}, pool=~"$pool", quantile="0.99"}}',
                        "{{pool}} observed p99",
                    ),
                    Query(
                        f'pdscale_predicted_itl_seconds{{{D}, pool=~"$pool"}}',
                        "{{pool}} predicted",
                    ),
                    Query(
                        f"histogram_quantile(0.99, sum by (le) "
                        f'(rate(vllm:inter_token_latency_seconds_bucket{{{E}, role="decode"}}[{RATE}])))',
                        "engines p99",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "SLO attainment by pool",
                (Query(f'pdscale_slo_attainment_ratio{{{D}, pool=~"$pool"}}', "{{pool}}"),),
                unit="percentunit",
                max_value=1.0,
            ),
            Panel(
                "Queued requests (engines)",
                (Query(f"sum by (pool) (vllm:num_requests_waiting{{{E}}})", "{{pool}}"),),
            ),
        ),
    ),
    (
        "Decisions and actuation",
        (
            Panel(
                "Decisions",
                (
                    Query(
                        f'sum by (pool, direction) (increase(pdscale_decisions_total{{{D}, pool=~"$pool"}}[{RATE}]))',
                        "{{pool}} {{direction}}",
                    ),
                ),
                width=8,
                bars=True,
            ),
            Panel(
                "Actuation failures",
                (
                    Query(
                        f"sum by (pool, error_class) "
                        f'(increase(pdscale_actuation_failures_total{{{D}, pool=~"$pool"}}[{RATE}]))',
                        "{{pool}} {{error_class}}",
                    ),
                ),
                width=8,
                bars=True,
            ),
            Panel(
                "Guards fired",
                (
                    Query(
                        f'sum by (pool, guard) (increase(pdscale_guard_fired_total{{{D}, pool=~"$pool"}}[{RATE}]))',
                        "{{pool}} {{guard}}",
                    ),
                ),
                width=8,
                bars=True,
            ),
            Panel(
                "Metrics staleness",
                (
                    Query(f'pdscale_metrics_staleness_seconds{{{D}, pool=~"$pool"}}', "{{pool}} age"),
                    Query(f'pdscale_metrics_missing{{{D}, pool=~"$pool"}}', "{{pool}} missing"),
                ),
                unit="s",
                width=24,
            ),
        ),
    ),
)


def _variables() -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str, multi: bool) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DATASOURCE,
            "query": {"query": query, "refId": f"var_{name}"},
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": multi,
            "allValue": ".*" if multi else None,
            "current": {},
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        },
        query_var("job", "pdscale job", "label_values(pdscale_up, job)", multi=False),
        query_var("pool", "Pool", 'label_values(pdscale_desired_replicas{job=~"$job"}, pool)', multi=True),
        query_var("model", "Model", "label_values(vllm:num_requests_running, model_name)", multi=True),
    ]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "min": 0}
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "bars" if panel.bars else "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
        }
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
        "targets": [
            {
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
                "refId": chr(ord("A") + index),
            }
            for index, query in enumerate(panel.queries)
        ],
    }
    if panel.repeat_by_pool:
        out["repeat"] = "pool"
        out["repeatDirection"] = "h"
        out["maxPerRow"] = 3
    return out


def build_dashboard() -> dict[str, Any]:
    """Return the Grafana dashboard model (schema version 39, Grafana 10 and later)."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x = 0
                y += row_height
                row_height = 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "uid": "pdscale",
        "title": "pdscale: disaggregated serving autoscaler",
        "description": "Prefill and decode pools: demand forecast vs actual, replicas, utilisation, "
        "latency against the SLO, and pdscale's decisions.",
        "tags": ["pdscale", "llm", "autoscaling"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables()},
        "panels": panels,
    }


def build_prometheus_rule() -> dict[str, Any]:
    """Return deploy/prometheus/rules.yaml as a monitoring.coreos.com/v1 PrometheusRule."""
    rules = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "pdscale",
            "labels": {"app.kubernetes.io/name": "pdscale", "app.kubernetes.io/component": "controller"},
        },
        "spec": {"groups": rules["groups"]},
    }


class _BlockDumper(yaml.SafeDumper):
    """Safe YAML dumper writing multi-line strings (PromQL, descriptions) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def rendered_files() -> dict[Path, str]:
    """Return the text every generated file must hold."""
    rule_header = "# Generated by deploy/render.py from deploy/prometheus/rules.yaml: edit that file, not this.\n"
    return {
        DASHBOARD_PATH: json.dumps(build_dashboard(), indent=2, sort_keys=False) + "\n",
        PROMETHEUS_RULE_PATH: rule_header
        + yaml.dump(build_prometheus_rule(), Dumper=_BlockDumper, sort_keys=False, width=1000),
    }


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with --check report the ones that are out of date."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(DEPLOY_DIR.parent)}")
    for path in stale:
        print(f"out of date: {path.relative_to(DEPLOY_DIR.parent)} (run python deploy/render.py)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
