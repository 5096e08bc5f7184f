"""A small kustomize renderer for machines without kubectl.

It implements only the kustomization features pdscale's overlays use: `resources` (files and
directories), `namespace`, `labels` (metadata only), `configMapGenerator` (files, create/replace, with a
content-hash name suffix and references from Deployment volumes updated), `images`, and `patches`
given as a file (strategic merge by kind/name, lists of named items merged by name, null deletes) or as
a JSON 6902 list with a `target`. A test compares its output with `kubectl kustomize` wherever kubectl is
installed, so it stays faithful for these overlays.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render"]

Doc = dict[str, Any]


def _load_docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic-merge `patch` into `base`: maps recurse, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    named = (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in [*base, *patch])
    )
    if named:
        merged_list = list(base)
        for item in patch:
            for position, existing in enumerate(merged_list):
                if existing["name"] == item["name"]:
                    merged_list[position] = _merge(existing, item)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _json_pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def _apply_json6902(doc: Doc, operations: list[Doc]) -> Doc:
    doc = copy.deepcopy(doc)
    for operation in operations:
        *parents, last = _json_pointer(operation["path"])
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert operation["op"] in {"add", "replace", "remove"}, f"unsupported op {operation['op']}"
        if operation["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            value = copy.deepcopy(operation["value"])
            if last == "-":
                node.append(value)
            elif operation["op"] == "add":
                node.insert(int(last), value)
            else:
                node[int(last)] = value
        else:
            node[last] = copy.deepcopy(operation["value"])
    return doc


def _matches(doc: Doc, target: Doc) -> bool:
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    return (
        target.get("kind", doc["kind"]) == doc["kind"]
        and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        and target.get("group", group) == group
    )


def _config_map(directory: Path, spec: Doc) -> Doc:
    data = {}
    for entry in spec.get("files", []):
        key, _, source = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = (directory / source).read_text(encoding="utf-8")
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": spec["name"]}, "data": data}


def _hashed_name(config_map: Doc) -> str:
    digest = hashlib.sha256(json.dumps(config_map["data"], sort_keys=True).encode()).hexdigest()
    return f"{config_map['metadata']['name']}-{digest[:10]}"


def _build(directory: Path) -> tuple[list[Doc], list[Doc]]:
    """Return (resources, generated config maps) of one kustomization, before name hashing."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    docs: list[Doc] = []
    generated: list[Doc] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            child_docs, child_generated = _build(path)
            docs += child_docs
            generated += child_generated
        else:
            docs += _load_docs(path)
    for generator in spec.get("configMapGenerator", []):
        config_map = _config_map(directory, generator)
        if generator.get("behavior", "create") == "replace":
            (replaced,) = [g for g in generated if g["metadata"]["name"] == generator["name"]]
            config_map["metadata"] = copy.deepcopy(replaced["metadata"])
            generated.remove(replaced)
        generated.append(config_map)
    for patch in spec.get("patches", []):
        content = yaml.safe_load((directory / patch["path"]).read_text(encoding="utf-8"))
        if isinstance(content, list):
            docs = [_apply_json6902(d, content) if _matches(d, patch["target"]) else d for d in docs]
        else:
            target = {"kind": content["kind"], "name": content["metadata"]["name"], **patch.get("target", {})}
            docs = [_merge(d, content) if _matches(d, target) else d for d in docs]
    for image in spec.get("images", []):
        for doc in docs:
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    tag = image.get("newTag", tag)
                    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    everything = docs + generated
    for label_spec in spec.get("labels", []):
        for doc in everything:
            doc["metadata"].setdefault("labels", {}).update(label_spec["pairs"])
    if "namespace" in spec:
        for doc in everything:
            doc["metadata"]["namespace"] = spec["namespace"]
            for subject in doc.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = spec["namespace"]
    return docs, generated


def render(directory: Path) -> list[Doc]:
    """Render the kustomization in `directory`, like `kubectl kustomize DIRECTORY` for pdscale's overlays."""
    docs, generated = _build(directory)
    renamed = {}
    for config_map in generated:
        hashed = _hashed_name(config_map)
        renamed[config_map["metadata"]["name"]] = hashed
        config_map["metadata"]["name"] = hashed
    for doc in docs:
        for volume in doc.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] in renamed:
                volume["configMap"]["name"] = renamed[volume["configMap"]["name"]]
    return docs + generated
