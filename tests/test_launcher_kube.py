"""The trusted launcher on the fake Kubernetes cluster (``tests/fake_kube``).

The launcher alone holds the kubeconfig (mode 0600, its token the one the fake API server
accepts); users get pods with no service-account token, and a user who calls the API
server directly, with a token of their own making, gets 401. Budgets count pods and
Docker containers of a user together.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from urllib.parse import quote

import kubernetes
import pytest
import yaml
from launchers import LauncherProcess, create_workload, queued_start

from jupyter_dss_containers import ownership

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def fake(docker_client):
    from fake_kube.server import FakeCluster

    cluster = FakeCluster("fake-l", docker_client, 8)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def kube_launcher(workspace, base_image, fake, docker_client):
    """A launcher over ``k8s`` (the fake cluster, 512Mi pods) and ``docker`` (dockerd,
    512 MiB): alice's 1 GiB budget queues, bob's refuses."""
    from fake_kube.server import write_kubeconfig

    folder = workspace / f"launcher-kube-{secrets.token_hex(3)}"
    folder.mkdir()
    kubeconfig = folder / "kubeconfig"
    write_kubeconfig(str(kubeconfig), {"fake-l": fake}, "fake-l")
    kubeconfig.chmod(0o600)
    common = {"image": "default", "permissions": {"groups": ["analysts"]}}
    document = {
        "groups": {"alice": ["analysts"], "bob": ["analysts"]},
        "budgets": {
            "users": {
                "alice": {"memory": "1g", "on_exceed": "queue"},
                "bob": {"memory": "1g"},
            }
        },
        "execution_configs": {
            "k8s": {
                **common,
                "backend": "kubernetes",
                "workspace": {"mount": "none"},
                "kubernetes": {
                    "kubeconfig": str(kubeconfig),
                    "context": "fake-l",
                    "namespace": "dss-${user}",
                    "create_namespace": True,
                    "image_pull_policy": "Never",
                    "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                },
            },
            "docker": {**common, "backend": "docker", "docker": {"resources": {"memory": "512m"}}},
        },
    }
    config = folder / "launcher.yaml"
    config.write_text(yaml.safe_dump(document))
    config.chmod(0o600)
    process = LauncherProcess(folder, config).start()
    process.kubeconfig = kubeconfig
    yield process
    process.stop()
    label = f"{ownership.PREFIX}launcher={process.launcher_id}"
    for container in docker_client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)


def _pod(fake, name: str) -> dict | None:
    for (_ns, pod_name), obj in fake.objects.get("pods", {}).items():
        if pod_name == name:
            return obj
    return None


def _delete(launcher, config: str, workload: dict, user: str) -> int:
    wid = quote(workload["id"], safe="")  # a pod's id is namespace/name
    return launcher.call("DELETE", f"configs/{config}/workloads/{wid}", user=user)[0]


def test_a_users_pod_through_the_launcher_carries_no_token_and_she_gets_no_kubeconfig(
    kube_launcher, fake
):
    """Guards a user's pod holding cluster credentials (the stored pod says
    ``automountServiceAccountToken: false`` and mounts no projected token) and the config
    document handing her the launcher's kubeconfig or context."""
    status, doc = kube_launcher.call("GET", "config", user="alice")
    assert status == 200
    k8s = doc["config"]["execution_configs"]["k8s"]["kubernetes"]
    assert "kubeconfig" not in k8s and "context" not in k8s, k8s
    assert str(kube_launcher.kubeconfig) not in yaml.safe_dump(doc)
    status, body = create_workload(kube_launcher, "alice", "k8s")
    assert status == 201, body
    try:
        pod = _pod(fake, body["name"])
        assert pod is not None, sorted(fake.objects.get("pods", {}))
        assert pod["metadata"]["namespace"] == "dss-alice"
        assert pod["metadata"]["labels"][ownership.OWNER] == "alice"
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert not spec.get("serviceAccountName") or spec["serviceAccountName"] == "default"
        projected = [v for v in spec.get("volumes", []) if "projected" in v]
        assert not projected, projected
        # her namespace is where the launcher looks for her, not its own user's
        listed = kube_launcher.call("GET", "configs/k8s/workloads", user="alice")[1]
        assert [w["id"] for w in listed["workloads"]] == [body["id"]]
        assert not kube_launcher.call("GET", "configs/k8s/workloads", user="bob")[1]["workloads"]
        wid = quote(body["id"], safe="")
        usage = kube_launcher.call("GET", "usage", user="alice")[1]
        assert [w["name"] for w in usage["workloads"]] == [body["name"]]
        theirs = kube_launcher.call("GET", f"configs/k8s/workloads/{wid}/status", user="bob")
        made_up = quote("dss-alice/dss-kernel-0000", safe="")
        missing = kube_launcher.call("GET", f"configs/k8s/workloads/{made_up}/status", user="bob")
        assert theirs[0] == missing[0] == 404, theirs
        mine = kube_launcher.call("GET", f"configs/k8s/workloads/{wid}/status", user="alice")
        assert mine[0] == 200, mine
    finally:
        assert _delete(kube_launcher, "k8s", body, "alice") == 200


def test_a_direct_api_call_with_a_made_up_token_is_refused_by_the_api_server(kube_launcher, fake):
    """Guards the cluster trusting whoever reaches its port: a made-up bearer token, or
    none, gets 401 ``Unauthorized`` from the fake API server on every kind of call, while
    the token in the launcher's kubeconfig (0600, root's) works."""
    assert os.stat(kube_launcher.kubeconfig).st_mode & 0o077 == 0

    def core(token: str | None) -> kubernetes.client.CoreV1Api:
        configuration = kubernetes.client.Configuration(host=fake.url)
        if token is not None:
            configuration.api_key = {"authorization": f"Bearer {token}"}
        return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))

    for token in (secrets.token_urlsafe(24), "", None, "fake-token-but-longer"):
        api = core(token)
        for call in (
            lambda a=api: a.list_namespaced_pod("dss-alice"),
            lambda a=api: a.create_namespaced_pod(
                "dss-alice",
                {"metadata": {"name": "evil"}, "spec": {"containers": [{"name": "c"}]}},
            ),
            lambda a=api: a.delete_namespaced_pod("x", "dss-alice"),
            lambda a=api: a.list_namespace(),
        ):
            with pytest.raises(kubernetes.client.ApiException) as info:
                call()
            assert info.value.status == 401, (token, info.value)
            assert "Unauthorized" in info.value.body
    assert _pod(fake, "evil") is None
    loaded = kubernetes.config.new_client_from_config(str(kube_launcher.kubeconfig))
    assert kubernetes.client.CoreV1Api(loaded).list_namespace().items is not None


def test_a_budget_sums_pods_and_containers_refused_or_queued(kube_launcher, fake, docker_client):
    """Guards budgets over a cluster and a daemon together: with a 512Mi pod and a 512 MiB
    container, bob's third kernel is refused at once naming both; alice's waits and starts
    once her pod is deleted."""
    made = []
    try:
        for user in ("bob", "alice"):
            for config in ("k8s", "docker"):
                status, body = create_workload(kube_launcher, user, config)
                assert status == 201, body
                made.append((config, body, user))
        status, body = create_workload(kube_launcher, "bob", "k8s")
        assert status == 429, body
        message = body["message"]
        assert "budget of user bob exceeded: memory 1 GiB of 1 GiB in use" in message
        for config, workload, _user in made[:2]:
            assert f"kernel {workload['name']} on {config}: 512 MiB" in message
        started, name = queued_start(kube_launcher, "alice", "k8s")
        assert _pod(fake, name) is None
        config, pod, _ = made.pop(2)
        assert config == "k8s" and _delete(kube_launcher, config, pod, "alice") == 200
        status, body = started.result(timeout=120)
        assert status == 201, body
        made.append(("k8s", body, "alice"))
        assert _pod(fake, name) is not None
    finally:
        for config, workload, user in made:
            _delete(kube_launcher, config, workload, user)


class _NoServers:
    """The hub's answer for users none of whose servers run (``HubClient.user``'s shape);
    the real hub's answers are tested in ``test_hub.py``."""

    async def user(self, name: str, fresh: bool = False):
        return None


def test_a_restarted_launcher_finds_and_reaps_pods_in_every_users_namespace(kube_launcher, fake):
    """Guards the reaper (and budgets) looking only in the launcher's own namespace: a
    launcher that starts afresh, knowing no owner, finds alice's pod in ``dss-alice`` (a
    namespace the backend labelled as its own) and reaps it when she has no live server."""
    from jupyter_dss_containers import images
    from jupyter_dss_containers.launcherd.lifecycle import reap_once
    from jupyter_dss_containers.launcherd.namespaces import managed_namespaces
    from jupyter_dss_containers.launcherd.policy import Caller
    from jupyter_dss_containers.launcherd.service import Launcher

    launcher_id = f"t-reap-{secrets.token_hex(3)}"
    first = Launcher(str(kube_launcher.config), launcher_id)
    loaded = asyncio.run(first.load())
    config = loaded.config_file.get("k8s")
    body = {
        "name": f"dss-kernel-{secrets.token_hex(4)}",
        "image": images.resolve_image(loaded.config_file, config),
        "command": ["sleep", "600"],
        "labels": {ownership.KIND: "kernel", ownership.OWNER: "alice"},
    }
    workload = asyncio.run(first.create(Caller(None, trusted_server=True), "k8s", body))
    assert workload.id == f"dss-alice/{body['name']}"
    assert "dss-alice" in asyncio.run(managed_namespaces(config))
    restarted = Launcher(str(kube_launcher.config), launcher_id)
    assert workload.id in [w.id for w in asyncio.run(restarted.all_workloads())]
    removed = asyncio.run(reap_once(restarted, _NoServers()))
    assert [w.id for w in removed] == [workload.id]
    assert _pod(fake, body["name"]) is None or _pod(fake, body["name"])["metadata"].get(
        "deletionTimestamp"
    )
