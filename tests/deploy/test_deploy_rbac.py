"""pdscale's Role grants exactly deploy/rbac-requirements.yaml, in every overlay."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import DEPLOY, OVERLAYS, render_overlay

Triple = tuple[str, str, str]  # (apiGroup, resource, verb)


def _requirements() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "rbac-requirements.yaml").read_text(encoding="utf-8"))
    return data


def required_triples(overlay: str) -> set[Triple]:
    """Expand the requirements for one overlay into (group, resource, verb) triples."""
    data = _requirements()
    triples = {(r["apiGroup"], r["resource"], v) for r in data["rules"] for v in r["verbs"]}
    verbs = data["custom_resource_verbs"]
    for key in data["overlays"][overlay]:
        resource = data["custom_resources"][key]
        group, name = resource["apiGroup"], resource["resource"]
        triples |= {(group, name, v) for v in verbs["parent"]}
        triples |= {(group, f"{name}/scale", v) for v in verbs["scale"]}
    return triples


def granted_triples(role: dict[str, Any]) -> set[Triple]:
    """Expand a Role's rules into (group, resource, verb) triples."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _role(overlay: str) -> dict[str, Any]:
    (role,) = [d for d in render_overlay(overlay) if d["kind"] == "Role"]
    return role


class TestRole:
    def test_requirements_name_every_overlay(self) -> None:
        """rbac-requirements.yaml says which custom resources each overlay configures."""
        assert set(_requirements()["overlays"]) == set(OVERLAYS)

    def test_role_grants_exactly_the_requirements(self, overlay: str) -> None:
        """No missing and no extra (group, resource, verb) in the rendered Role."""
        granted, required = granted_triples(_role(overlay)), required_triples(overlay)
        assert granted - required == set(), "granted but not required"
        assert required - granted == set(), "required but not granted"

    def test_no_wildcards_or_resource_names(self, overlay: str) -> None:
        """Rules name groups, resources and verbs explicitly."""
        for rule in _role(overlay)["rules"]:
            assert "*" not in [*rule["apiGroups"], *rule["resources"], *rule["verbs"]]
            assert "resourceNames" not in rule
            assert "nonResourceURLs" not in rule

    def test_replica_counts_only_through_scale_subresource(self, overlay: str) -> None:
        """Write verbs on workload objects are granted only on their /scale subresource (Events are records)."""
        writes = {"patch", "update", "create", "delete"}
        for group, resource, verb in granted_triples(_role(overlay)):
            if verb in writes and resource not in {"pods", "leases", "events"}:
                assert resource.endswith("/scale"), (group, resource, verb)

    def test_namespaced_only(self, overlay: str) -> None:
        """No ClusterRole or ClusterRoleBinding is shipped."""
        kinds = {d["kind"] for d in render_overlay(overlay)}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}

    def test_binding_grants_the_role_to_the_daemon_service_account(self, overlay: str) -> None:
        """The RoleBinding binds the Role to the ServiceAccount the Deployment runs as, in one namespace."""
        docs = render_overlay(overlay)
        (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        role = _role(overlay)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": deployment["metadata"]["namespace"]}
        ]
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == deployment["metadata"]["namespace"]

    def test_actuator_targets_the_role_namespace(self, overlay: str) -> None:
        """The kubernetes actuator's namespace is the one the Role grants access in."""
        docs = render_overlay(overlay)
        (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
        config = yaml.safe_load(config_map["data"]["config.yaml"])
        assert config["actuator"]["params"]["namespace"] == _role(overlay)["metadata"]["namespace"]


class TestExpansion:
    def test_extra_verb_is_detected(self) -> None:
        """A Role with one verb more than required differs from the requirements."""
        role = yaml.safe_load(yaml.safe_dump(_role("dev")))
        role["rules"][0]["verbs"].append("delete")
        assert granted_triples(role) - required_triples("dev") == {
            ("apps", "deployments/scale", "delete"),
            ("apps", "statefulsets/scale", "delete"),
        }

    def test_custom_resources_expand_to_parent_and_scale(self) -> None:
        """An overlay's custom resource adds its parent verbs and its /scale verbs."""
        extra = required_triples("dynamo") - required_triples("production")
        assert extra == {
            ("nvidia.com", "dynamographdeploymentscalingadapters", "get"),
            ("nvidia.com", "dynamographdeploymentscalingadapters", "list"),
            ("nvidia.com", "dynamographdeploymentscalingadapters", "watch"),
            ("nvidia.com", "dynamographdeploymentscalingadapters/scale", "get"),
            ("nvidia.com", "dynamographdeploymentscalingadapters/scale", "patch"),
            ("nvidia.com", "dynamographdeploymentscalingadapters/scale", "update"),
        }
