"""The Kubernetes manifests every kustomize overlay renders: schema-valid and locked down."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pdscale.controller.admin.server import is_loopback
from pdscale.controller.runtime.settings import parse_settings
from tests.deploy import kustomize_lite
from tests.deploy.deploy_support import DEPLOY, OVERLAYS, kubectl_path, render_overlay, render_with_kubectl

# Oldest supported Kubernetes minor, and the newest whose schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", str(kubernetes_validate.latest_version()))
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
SCHEMAS = yaml.safe_load((Path(__file__).parent / "monitoring_crd_schemas.yaml").read_text(encoding="utf-8"))


def _one(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def _daemon_config(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    config_map = _one(docs, "ConfigMap")
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


def _container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _normalise(doc: dict[str, Any]) -> str:
    """Comparable text of a document: generated name hashes and the order of named list items ignored."""

    def sort_named(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: sort_named(value) for key, value in node.items()}
        if isinstance(node, list):
            items = [sort_named(item) for item in node]
            if all(isinstance(item, dict) and "name" in item for item in items):
                items.sort(key=lambda item: str(item["name"]))
            return items
        return node

    text = yaml.safe_dump(sort_named(doc), sort_keys=True)
    return re.sub(r"(pdscale-config)-[a-z0-9]{10}", r"\1-HASH", text)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class TestSchemas:
    @pytest.mark.parametrize("version", K8S_VERSIONS)
    def test_core_resources_pass_kubernetes_validate_strict(self, overlay: str, version: str) -> None:
        """Every core resource validates against the Kubernetes schemas, unknown fields rejected."""
        docs = [d for d in render_overlay(overlay) if d["kind"] not in MONITORING_KINDS]
        assert {d["kind"] for d in docs} >= {
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Service",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
        }
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)

    def test_strict_validation_rejects_an_unknown_field(self) -> None:
        """kubernetes-validate in strict mode catches a misspelt container field."""
        deployment = _one(render_overlay("dev"), "Deployment")
        broken = yaml.safe_load(yaml.safe_dump(deployment))
        broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)

    def test_monitoring_resources_match_operator_schemas(self, overlay: str) -> None:
        """ServiceMonitor, PodMonitor and PrometheusRule match the vendored structural schemas."""
        docs = [d for d in render_overlay(overlay) if d["kind"] in MONITORING_KINDS]
        assert {d["kind"] for d in docs} >= {"ServiceMonitor", "PodMonitor"}
        for doc in docs:
            schema = {"$defs": SCHEMAS["$defs"], **SCHEMAS["kinds"][doc["kind"]]}
            jsonschema.Draft202012Validator(schema).validate(doc)

    def test_monitoring_schema_rejects_a_misspelt_field(self) -> None:
        """The vendored schemas are strict: a misspelt endpoint field fails validation."""
        doc = _one(render_overlay("dev"), "ServiceMonitor")
        broken = {**doc, "spec": {**doc["spec"], "endpoints": [{"port": "metrics", "intervall": "15s"}]}}
        schema = {"$defs": SCHEMAS["$defs"], **SCHEMAS["kinds"]["ServiceMonitor"]}
        with pytest.raises(jsonschema.ValidationError, match="intervall"):
            jsonschema.Draft202012Validator(schema).validate(broken)

    @pytest.mark.parametrize("template", ["secret-admin-token.example.yaml", "secret-admin-tls.example.yaml"])
    def test_secret_template_is_valid_and_outside_every_overlay(self, overlay: str, template: str) -> None:
        """The admin-token and admin-TLS Secret templates validate, and no overlay ships a Secret."""
        doc = yaml.safe_load((DEPLOY / "kubernetes" / template).read_text())
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        assert not [d for d in render_overlay(overlay) if d["kind"] == "Secret"]

    @pytest.mark.skipif(kubectl_path() is None, reason="kubectl not installed: nothing to compare with")
    def test_fallback_renderer_matches_kubectl(self, overlay: str) -> None:
        """kustomize_lite, used where kubectl is missing, renders what kubectl kustomize renders."""
        kubectl = kubectl_path()
        assert kubectl is not None
        directory = DEPLOY / "kubernetes" / "overlays" / overlay
        expected = sorted(_normalise(d) for d in render_with_kubectl(kubectl, directory))
        assert sorted(_normalise(d) for d in kustomize_lite.render(directory)) == expected


class TestDeployment:
    def test_single_owner(self, overlay: str) -> None:
        """One replica, Recreate strategy: two pdscale pods never scale the same pools."""
        spec = _one(render_overlay(overlay), "Deployment")["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}

    def test_pod_runs_non_root_with_runtime_default_seccomp(self, overlay: str) -> None:
        """The pod runs as a numeric non-root user under the RuntimeDefault seccomp profile."""
        pod = _one(render_overlay(overlay), "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    def test_container_is_locked_down(self, overlay: str) -> None:
        """Read-only root filesystem, no privilege escalation, every capability dropped."""
        context = _container(render_overlay(overlay))["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}

    def test_resources_bound_the_daemon(self, overlay: str) -> None:
        """CPU and memory have requests and limits; memory fits the daemon's < 250 MB RSS with headroom."""
        resources = _container(render_overlay(overlay))["resources"]
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[section].keys()
        assert resources["requests"]["memory"] == "256Mi"
        assert resources["limits"]["memory"] == "512Mi"

    def test_probes_use_telemetry_endpoints(self, overlay: str) -> None:
        """Liveness and startup probe /healthz, readiness probes /readyz, on the telemetry port."""
        container = _container(render_overlay(overlay))
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    def test_container_ports_match_config_listen_addresses(self, overlay: str) -> None:
        """The named ports are the ones the config's admin and telemetry listeners bind, on all interfaces."""
        docs = render_overlay(overlay)
        config = _daemon_config(docs)
        ports = {p["name"]: p["containerPort"] for p in _container(docs)["ports"]}
        assert config["admin"]["listen"] == f"0.0.0.0:{ports['grpc-admin']}"
        assert config["telemetry"]["listen"] == f"0.0.0.0:{ports['metrics']}"

    def test_writable_paths_are_volumes(self, overlay: str) -> None:
        """The state database's directory and /tmp are writable volumes; config and token are read-only."""
        docs = render_overlay(overlay)
        config = _daemon_config(docs)
        mounts = {m["mountPath"]: m for m in _container(docs)["volumeMounts"]}
        assert str(Path(config["state"]["path"]).parent) in mounts
        assert not mounts[str(Path(config["state"]["path"]).parent)].get("readOnly", False)
        assert not mounts["/tmp"].get("readOnly", False)
        assert mounts["/etc/pdscale"]["readOnly"] is True
        assert mounts[str(Path(config["admin"]["token"]["file"]).parent)]["readOnly"] is True

    def test_admin_token_is_readable_by_the_daemon_group(self, overlay: str) -> None:
        """The token and TLS files are group-readable (fsGroup) and not world-readable."""
        pod = _one(render_overlay(overlay), "Deployment")["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "secret" in v or "projected" in v]
        assert volume["projected"]["defaultMode"] == 0o440
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]

    def test_admin_api_on_the_pod_network_serves_tls_from_a_secret(self, overlay: str) -> None:
        """Listening beyond loopback, the admin API has TLS whose cert and key are files of a mounted Secret."""
        docs = render_overlay(overlay)
        config = _daemon_config(docs)
        admin = parse_settings(config, "config.yaml").admin
        assert not is_loopback(admin.listen)
        assert admin.tls is not None
        mounts = {m["name"]: m["mountPath"] for m in _container(docs)["volumeMounts"]}
        pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
        served: dict[Path, tuple[str, str]] = {}
        for volume in pod["volumes"]:
            for source in volume.get("projected", {}).get("sources", []):
                secret = source.get("secret")
                for item in (secret or {}).get("items", []):
                    served[Path(mounts[volume["name"]]) / item["path"]] = (secret["name"], item["key"])
        assert served[admin.tls.cert] == ("pdscale-admin-tls", "tls.crt")
        assert served[admin.tls.key] == ("pdscale-admin-tls", "tls.key")

    def test_entrypoint_arguments_name_the_mounted_config(self, overlay: str) -> None:
        """The container runs `pdscale serve --config /etc/pdscale/config.yaml` from the ConfigMap."""
        container = _container(render_overlay(overlay))
        assert container["args"] == ["serve", "--config", "/etc/pdscale/config.yaml"]

    def test_production_state_survives_rescheduling(self) -> None:
        """Production keeps state on a PersistentVolumeClaim that the overlay creates."""
        docs = render_overlay("production")
        pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
        (state,) = [v for v in pod["volumes"] if v["name"] == "state"]
        assert "emptyDir" not in state
        assert state["persistentVolumeClaim"]["claimName"] == _one(docs, "PersistentVolumeClaim")["metadata"]["name"]


class TestNetworkAndMonitoring:
    def test_ingress_only_to_admin_and_telemetry_from_labelled_namespaces(self, overlay: str) -> None:
        """Ingress rules open only ports 50051 and 9464, each from a labelled namespace selector."""
        policy = _one(render_overlay(overlay), "NetworkPolicy")["spec"]
        assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
        opened = set()
        for rule in policy["ingress"]:
            (source,) = rule["from"]
            assert source["namespaceSelector"]["matchLabels"]
            opened |= {port["port"] for port in rule["ports"]}
        assert opened == {50051, 9464}

    def test_egress_limited_to_dns_prometheus_api_server_and_engines(self, overlay: str) -> None:
        """Egress allows DNS (53), Prometheus (9090), the API server (443, 6443) and the engines (8000) only."""
        policy = _one(render_overlay(overlay), "NetworkPolicy")["spec"]
        ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
        assert ports == {(53, "UDP"), (53, "TCP"), (9090, "TCP"), (443, "TCP"), (6443, "TCP"), (8000, "TCP")}
        named = {53, 9090, 8000}
        assert all(rule.get("to") for rule in policy["egress"] if {p["port"] for p in rule["ports"]} & named)

    def test_engine_egress_reaches_the_drain_port_in_the_actuators_namespace(self, overlay: str) -> None:
        """The daemon may reach every pool's drain URL port on engine pods in the namespace it scales."""
        docs = render_overlay(overlay)
        config = _daemon_config(docs)
        namespace = config["actuator"]["params"]["namespace"]
        drain_ports = {
            int(urlsplit(pool["actuator"]["drain"].get("url", "http://$address:8000")).port or 80)
            for pool in config["pools"]
            if "drain" in pool["actuator"]
        }
        open_to_engines = set()
        for rule in _one(docs, "NetworkPolicy")["spec"]["egress"]:
            for peer in rule.get("to", []):
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                exprs = peer.get("podSelector", {}).get("matchExpressions", [])
                roles = {
                    v for e in exprs if e["key"] == "pdscale.io/role" and e["operator"] == "In" for v in e["values"]
                }
                if ns == {"kubernetes.io/metadata.name": namespace} and roles == {"prefill", "decode"}:
                    open_to_engines |= {p["port"] for p in rule["ports"] if p["protocol"] == "TCP"}
        assert open_to_engines, "no egress rule to the engine pods"
        assert drain_ports <= open_to_engines

    def test_production_pins_api_server_egress_to_a_cidr(self) -> None:
        """Production narrows the API-server rule to an ipBlock."""
        policy = _one(render_overlay("production"), "NetworkPolicy")["spec"]
        (rule,) = [r for r in policy["egress"] if {p["port"] for p in r["ports"]} == {443, 6443}]
        assert [peer["ipBlock"]["cidr"] for peer in rule["to"]]

    def test_service_monitor_scrapes_the_service_metrics_port(self, overlay: str) -> None:
        """The ServiceMonitor selects the Service and names one of its ports."""
        docs = render_overlay(overlay)
        service, monitor = _one(docs, "Service"), _one(docs, "ServiceMonitor")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}

    def test_service_selects_the_daemon_pod(self, overlay: str) -> None:
        """The Service selector matches the pod template's labels."""
        docs = render_overlay(overlay)
        labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert _one(docs, "Service")["spec"]["selector"].items() <= labels.items()

    def test_engine_pod_monitor_relabels_pool_and_role(self, overlay: str) -> None:
        """Engine series get `pool` and `role` from the pdscale.io pod labels."""
        (endpoint,) = _one(render_overlay(overlay), "PodMonitor")["spec"]["podMetricsEndpoints"]
        targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert targets["pool"] == ["__meta_kubernetes_pod_label_pdscale_io_pool"]
        assert targets["role"] == ["__meta_kubernetes_pod_label_pdscale_io_role"]

    def test_disruption_budget_never_blocks_node_drains(self, overlay: str) -> None:
        """The PDB selects the daemon and allows its single pod to be evicted."""
        docs = render_overlay(overlay)
        budget = _one(docs, "PodDisruptionBudget")["spec"]
        labels = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        assert budget["maxUnavailable"] >= 1
        assert "minAvailable" not in budget
