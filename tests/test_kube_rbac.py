"""The shipped RBAC manifest, and the fake cluster enforcing it (issue 16, item 3).

The Role is exactly the verbs the backend calls (read from the backend's source, both
ways); ``doctor`` asks the cluster about each (SelfSubjectAccessReviews, answered by the
fake from the Roles bound to the token) and names the missing ones; a request outside the
rules gets the apiserver's 403 text. Against an HTTPS fake whose CA the client verifies.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import kubernetes.client
import kubernetes.config
import kubernetes.utils
import pytest
import yaml

import jupyter_dss_containers
from jupyter_dss_containers.backends import BackendError, backend_for
from jupyter_dss_containers.backends.kubernetes import rbac
from jupyter_dss_containers.config import ExecutionConfig, load_config

PACKAGE = Path(jupyter_dss_containers.__file__).parent
NS = "dss-team"
SA_USER = f"system:serviceaccount:{NS}:{rbac.SERVICE_ACCOUNT}"
#: client method's kind (snake) -> the resource RBAC names
_RESOURCES = {
    "pod": "pods",
    "pod_log": "pods/log",
    "secret": "secrets",
    "event": "events",
    "network_policy": "networkpolicies",
    "daemon_set": "daemonsets",
}
_VERBS = {"create": "create", "read": "get", "list": "list", "patch": "patch", "delete": "delete"}


def backend_calls() -> set[tuple[str, str]]:
    """(verb, resource) of every namespaced client call in the package (a watch of
    ``list_namespaced_pod`` is ``watch pods``; ``read_namespace`` is ``get namespaces``)."""
    calls: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        if "launcherd" in path.parts:  # the launcher's own ClusterRole (README)
            continue
        text = path.read_text()
        for verb, kind in re.findall(r"\b(create|read|list|patch|delete)_namespaced_(\w+)", text):
            if kind == "custom_object" or kind.endswith("access_review"):
                continue
            calls.add((_VERBS[verb], _RESOURCES[kind]))
        if re.search(r"\bread_namespace\b", text):
            calls.add(("get", "namespaces"))
        if re.search(r"watch\.stream\(\s*self\.core\.list_namespaced_pod", text):
            calls.add(("watch", "pods"))
        if "connect_get_namespaced_pod_portforward" in text:  # a websocket: create and get
            calls |= {("create", "pods/portforward"), ("get", "pods/portforward")}
        if "get_namespaced_custom_object" in text and '"metrics.k8s.io"' in text:
            calls.add(("get", "metrics.k8s.io/pods"))
    return calls


def granted() -> set[tuple[str, str]]:
    return {
        (verb, f"{r.group}/{r.resource}" if r.group.endswith("metrics.k8s.io") else r.resource)
        for r in rbac.RULES
        for verb in r.verbs
    }


def test_the_role_is_exactly_the_verbs_the_backend_calls():
    """Guards drift both ways: a new client call without its rule (the server pod would be
    refused in production) and a rule nothing calls (more than the least privilege)."""
    calls = backend_calls()
    assert ("watch", "pods") in calls and ("get", "pods/log") in calls  # the scan sees them
    assert calls == granted()


def test_the_shipped_manifest_is_the_generated_one():
    """Guards the package resource against going stale: it is the ``rbac`` command's output
    for the namespace ``jupyter``, and the command honours ``--namespace``."""
    shipped = (PACKAGE / "resources" / "rbac.yaml").read_text()
    assert shipped == rbac.manifest_yaml()
    cli = "from jupyter_dss_containers.cli import main; main()"
    out = subprocess.run(
        [sys.executable, "-c", cli, "rbac", f"--namespace={NS}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    assert {d["metadata"]["namespace"] for d in docs} == {NS}
    assert docs[2]["subjects"] == [
        {"kind": "ServiceAccount", "name": rbac.SERVICE_ACCOUNT, "namespace": NS}
    ]


@pytest.fixture(scope="module")
def https_cluster(docker_client, tmp_path_factory):
    from fake_kube.server import FakeCluster, write_kubeconfig

    fake = FakeCluster("fake-rbac", docker_client, 12, tls=True)
    fake.start()
    folder = tmp_path_factory.mktemp("rbac")
    admin = str(folder / "admin.kubeconfig")
    write_kubeconfig(admin, {"fake-rbac": fake}, "fake-rbac")
    client = kubernetes.config.new_client_from_config(admin)
    kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": NS}})
    objects = list(yaml.safe_load_all(rbac.manifest_yaml(NS)))
    kubernetes.utils.create_from_yaml(client, yaml_objects=objects)
    token = fake.call(_issue, fake)
    account = folder / "account.kubeconfig"
    config = yaml.safe_load(Path(admin).read_text())
    config["users"][0]["user"]["token"] = token
    account.write_text(yaml.safe_dump(config))
    yield fake, client, str(account)
    fake.stop()


async def _issue(fake):
    return fake.rbac.issue(NS, rbac.SERVICE_ACCOUNT)


def _role_without(client, resource: str) -> None:
    api = kubernetes.client.RbacAuthorizationV1Api(client)
    rules = [r for r in rbac.role_rules() if r["resources"] != [resource]]
    api.patch_namespaced_role(rbac.ROLE, NS, [{"op": "replace", "path": "/rules", "value": rules}])


def _restore_role(client) -> None:
    api = kubernetes.client.RbacAuthorizationV1Api(client)
    value = rbac.role_rules()
    api.patch_namespaced_role(rbac.ROLE, NS, [{"op": "replace", "path": "/rules", "value": value}])


def _config(kubeconfig: str) -> ExecutionConfig:
    data = {
        "execution_configs": {
            "team": {
                "backend": "kubernetes",
                "image": "default",
                "kubernetes": {"kubeconfig": kubeconfig, "namespace": NS},
                "permissions": {"groups": ["*"]},
            }
        }
    }
    path = Path(kubeconfig).with_name("dss.yaml")
    path.write_text(yaml.safe_dump(data))
    return load_config(path).get("team")


def test_a_service_account_gets_the_apiservers_403_outside_its_role(https_cluster):
    """Guards the fake's RBAC (what the in-cluster test relies on): the Role's verbs pass,
    a cluster-scoped call and a namespace the Role is not in are refused in the real
    apiserver's words, and the CA the client verifies is the cluster's own."""
    fake, _, account = https_cluster
    assert fake.url.startswith("https://")
    core = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(account))
    assert core.list_namespaced_pod(NS).items == []
    assert core.read_namespace(NS).metadata.name == NS  # its own namespace, by name
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.list_namespace()
    assert refused.value.status == 403
    assert yaml.safe_load(refused.value.body)["message"] == (
        f'namespaces is forbidden: User "{SA_USER}" cannot list resource "namespaces" '
        'in API group "" at the cluster scope'
    )
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.read_namespaced_pod_log("x", "default")
    assert yaml.safe_load(refused.value.body)["message"] == (
        f'pods "x" is forbidden: User "{SA_USER}" cannot get resource "pods/log" '
        'in API group "" in the namespace "default"'
    )
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(account, client_configuration=config)
    config.ssl_ca_cert = None  # the system's CAs do not know the cluster's
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config)).list_namespaced_pod(
            NS, _request_timeout=5
        )


async def test_doctor_names_every_verb_the_role_lacks(https_cluster):
    """Guards the check: with the shipped Role it passes; with ``pods/log`` and ``events``
    taken out it names exactly those (one SelfSubjectAccessReview per verb, answered by
    the cluster from the Role) and says how to grant them."""
    _, admin, account = https_cluster
    backend = backend_for(_config(account))
    info = await backend.check()
    assert info["engine"] == "kubernetes"
    try:
        _role_without(admin, "pods/log")
        api = kubernetes.client.RbacAuthorizationV1Api(admin)
        role = api.read_namespaced_role(rbac.ROLE, NS)
        rules = [r.to_dict() for r in role.rules if r.resources != ["events"]]
        rules = [
            {"apiGroups": r["api_groups"], "resources": r["resources"], "verbs": r["verbs"]}
            for r in rules
        ]
        api.patch_namespaced_role(
            rbac.ROLE, NS, [{"op": "replace", "path": "/rules", "value": rules}]
        )
        with pytest.raises(BackendError) as denied:
            await backend_for(_config(account)).check()
        message = str(denied.value)
        assert f"namespace {NS}: not allowed to get pods/log, list events;" in message
        assert f"jupyter dss-containers rbac --namespace {NS}" in message
    finally:
        _restore_role(admin)
