"""Shared helpers of the deploy tests: paths, kustomize rendering, catalogs and a PromQL selector scanner."""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.deploy import kustomize_lite

__all__ = [
    "DEPLOY",
    "OVERLAYS",
    "REPO",
    "MetricCatalog",
    "Selector",
    "catalog",
    "kubectl_path",
    "load_render_module",
    "render_overlay",
    "render_with_kubectl",
    "selectors",
]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "production", "dynamo")


def kubectl_path() -> str | None:
    """Return the kubectl binary that renders kustomizations, or None when it is not installed."""
    return shutil.which("kubectl")


@functools.cache
def render_overlay(name: str) -> tuple[dict[str, Any], ...]:
    """Render deploy/kubernetes/overlays/<name>: `kubectl kustomize` where installed, else kustomize_lite."""
    directory = DEPLOY / "kubernetes" / "overlays" / name
    kubectl = kubectl_path()
    if kubectl is None:
        return tuple(kustomize_lite.render(directory))
    return render_with_kubectl(kubectl, directory)


def render_with_kubectl(kubectl: str, directory: Path) -> tuple[dict[str, Any], ...]:
    """Render a kustomization with `kubectl kustomize` and return its documents."""
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@functools.cache
def load_render_module() -> ModuleType:
    """Import deploy/render.py (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("pdscale_deploy_render", DEPLOY / "render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True, slots=True)
class MetricCatalog:
    """deploy/metrics-catalog.yaml, indexed by every series name a query may use."""

    # series name -> (base metric name, allowed label names, label name -> allowed values or None)
    series: dict[str, tuple[str, frozenset[str], dict[str, frozenset[str] | None]]]
    daemon_names: frozenset[str]
    engine_names: frozenset[str]


# Labels Prometheus attaches to every scraped series (target labels of the ServiceMonitor/PodMonitor).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint", "container"})


@functools.cache
def catalog() -> MetricCatalog:
    """Load deploy/metrics-catalog.yaml."""
    data = yaml.safe_load((DEPLOY / "metrics-catalog.yaml").read_text(encoding="utf-8"))
    series: dict[str, tuple[str, frozenset[str], dict[str, frozenset[str] | None]]] = {}
    for entry in data["daemon"]:
        values = {
            label: None if allowed is None else frozenset(str(v) for v in allowed)
            for label, allowed in entry["labels"].items()
        }
        labels = frozenset(values) | TARGET_LABELS
        if entry["type"] == "histogram":
            series[entry["name"] + "_bucket"] = (entry["name"], labels | {"le"}, values)
            series[entry["name"] + "_sum"] = (entry["name"], labels, values)
            series[entry["name"] + "_count"] = (entry["name"], labels, values)
        else:
            series[entry["name"]] = (entry["name"], labels, values)
    engine_labels = frozenset(data["engine_labels"]) | TARGET_LABELS
    for entry in data["engine"]:
        extra = {"le"} if entry["type"] == "histogram_bucket" else set()
        series[entry["name"]] = (entry["name"], engine_labels | extra, {})
    return MetricCatalog(
        series=series,
        daemon_names=frozenset(e["name"] for e in data["daemon"]),
        engine_names=frozenset(e["name"] for e in data["engine"]),
    )


@dataclass(frozen=True, slots=True)
class Selector:
    """One vector selector in a PromQL expression: a metric name and its label matchers."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<braces>\{[^}]*\})
  | (?P<range>\[[^\]]*\])
  | (?P<number>(?:0x[0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+)(?![a-zA-Z_:]))
  | (?P<duration>[0-9]+[a-zA-Z]+)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<lparen>\()
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')\s*,?')
# Keywords followed by a parenthesised label list, not by an expression.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_OPERATOR_KEYWORDS = frozenset({"and", "or", "unless", "bool", "atan2", "inf", "nan", "offset"})
# Aggregation operators may be followed by `by (...)` before their parenthesised argument.
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)


def _matchers(block: str) -> tuple[tuple[str, str, str], ...]:
    body = block[1:-1].strip()
    found: list[tuple[str, str, str]] = []
    position = 0
    while position < len(body):
        match = _MATCHER.match(body, position)
        assert match is not None, f"cannot parse label matchers {block!r}"
        found.append((match.group(1), match.group(2), match.group(3)[1:-1]))
        position = match.end()
    return tuple(found)


def selectors(expr: str) -> list[Selector]:
    """Return every vector selector of a PromQL expression (functions, keywords and literals skipped)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]
    found: list[Selector] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else (None, "")
        if kind == "ident" and text in _LABEL_LIST_KEYWORDS and following[0] == "lparen":
            depth = 0
            index += 1
            while index < len(tokens):
                depth += {"(": 1, ")": -1}.get(tokens[index][1], 0)
                index += 1
                if depth == 0:
                    break
            continue
        if kind == "ident" and (following[0] == "lparen" or text in _AGGREGATIONS):  # function or aggregation
            index += 1
            continue
        if kind == "ident" and text not in _OPERATOR_KEYWORDS:
            matchers = _matchers(following[1]) if following[0] == "braces" else ()
            found.append(Selector(text, matchers))
            index += 2 if following[0] == "braces" else 1
            continue
        if kind == "braces":
            found.append(Selector("", _matchers(text)))
        index += 1
    return found
