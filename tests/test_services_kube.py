"""The Kubernetes manifests of a model service (pure builders, no cluster yet): every
object valid strictly (unknown fields refused) with kubernetes-validate, pods within Pod
Security ``restricted``, and the wiring (selectors, probes, volumes, router addresses)
asserted field by field."""

from __future__ import annotations

import kubernetes_validate
import pytest
from fake_kube import podsecurity

from jupyter_dss_containers.config import parse_config
from jupyter_dss_containers.services import kube, spec

K8S_VERSION = "1.31"


def config():
    data = {
        "backend": "kubernetes",
        "image": "default",
        "registry": "registry.example.com/team",
        "kubernetes": {"resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}},
        "permissions": {"groups": ["*"]},
    }
    return parse_config({"execution_configs": {"k": data}}, "inline").get("k")


def every_manifest():
    c = config()
    deployment = kube.version_deployment(c, "img:1", "alice", "iris", "v1", 2, "ns")
    return [
        kube.code_configmap("alice", "iris", "k", "ns"),
        kube.model_secret("alice", "iris", "k", "v1", b"\x80pickle", {"a": 1}, "ns"),
        kube.admin_secret("alice", "iris", "k", "tok", "ns"),
        deployment,
        kube.service("alice", "iris", "k", "v1", "ns"),
        kube.router_deployment(c, "img:1", "alice", "iris", "ns"),
        kube.service("alice", "iris", "k", None, "ns"),
        kube.autoscaler(deployment, {"min": 2, "max": 6, "target_cpu": 60}),
    ]


@pytest.mark.parametrize("index", range(8))
def test_every_service_manifest_is_strictly_valid(index):
    """Guards each builder against a misspelt or misplaced field (strict validation)."""
    kubernetes_validate.validate(every_manifest()[index], K8S_VERSION, strict=True)


def test_service_pods_pass_pod_security_restricted():
    """Guards the hardening of replica and router pods (non-root, no escalation, no
    capability, seccomp, read-only root)."""
    for m in every_manifest():
        if m["kind"] == "Deployment":
            pod = m["spec"]["template"]["spec"]
            assert podsecurity.violations("restricted", pod) == []
            assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
            assert pod["automountServiceAccountToken"] is False


def test_the_wiring_of_a_version_and_its_router():
    """Guards selectors that select the pods, the readiness probe on the model, the model
    Secret and code mounted read-only, and router addresses naming the version Services."""
    configmap, secret, _, deployment, svc, router, router_svc, hpa = every_manifest()
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert all(labels[k] == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    router_labels = router["spec"]["template"]["metadata"]["labels"]
    assert all(router_labels[k] == v for k, v in router_svc["spec"]["selector"].items())
    assert svc["spec"]["selector"] != router_svc["spec"]["selector"]
    container = template["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["image"] == "registry.example.com/team/img:1"
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] != "tmp")
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["model"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes["code"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert set(configmap["data"]) == set(spec.RUNTIME_FILES)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    routes = kube.router_config("alice", "iris", [spec.VersionSpec("v1", 2, 100)], [], "ns")
    assert routes["versions"]["v1"]["replicas"] == [f"{svc['metadata']['name']}.ns.svc:8080"]
    env = {e["name"]: e for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "value" not in env["DSS_ROUTER_ADMIN_TOKEN"]  # from the Secret, not the manifest


@pytest.mark.parametrize("bad", [{"max": 0}, {"min": 3, "max": 2}, {"max": 2, "target_cpu": True}])
def test_bad_autoscale_settings_are_refused(bad):
    deployment = every_manifest()[3]
    with pytest.raises(spec.SpecError):
        kube.autoscaler(deployment, bad)
