"""The Jupyter server in a Kubernetes pod, on its service account (issue 16, item 3).

Real parts: the server image from ``build-server-image``, run by the fake cluster's kubelet
as a pod (host network, as the network rule has it: the kernels' pod IPs are on the host's
loopback) with the service-account token, ``ca.crt`` and namespace mounted where a real
kubelet mounts them and ``KUBERNETES_SERVICE_HOST``/``PORT`` set; the config's
``in_cluster: true``, so the official client's in-cluster loader reads them and verifies
the API server (HTTPS, the cluster's own CA) with that ``ca.crt``. RBAC is enforced for
that token from the shipped manifest (ServiceAccount, Role, RoleBinding created through
the API). The test reaches the server's REST API and websocket on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.utils
import pytest
import yaml
from servers import free_port, http, ws_execute

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.kubernetes import rbac
from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.images.server_image import build_server_image
from jupyter_dss_containers.images.server_recipe import DEFAULT_CMD

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

NS = "dss-team"
POD = "jupyter"
SA_USER = f"system:serviceaccount:{NS}:{rbac.SERVICE_ACCOUNT}"


@pytest.fixture(scope="module")
def server_image(docker_client, base_image) -> str:
    """Built once per content (a no-op when it exists)."""
    return build_server_image(load_config(None).base_images["default"], docker_client)[0]


@pytest.fixture(scope="module")
def cluster(docker_client, tmp_path_factory):
    """An HTTPS fake cluster, the namespace, and the shipped RBAC applied in it."""
    from fake_kube.server import FakeCluster, write_kubeconfig

    fake = FakeCluster("fake-ic", docker_client, 11, tls=True)
    fake.start()
    kubeconfig = str(tmp_path_factory.mktemp("incluster") / "admin.kubeconfig")
    write_kubeconfig(kubeconfig, {"fake-ic": fake}, "fake-ic")
    admin = kubernetes.config.new_client_from_config(kubeconfig)
    kubernetes.client.CoreV1Api(admin).create_namespace({"metadata": {"name": NS}})
    objects = list(yaml.safe_load_all(rbac.manifest_yaml(NS)))
    kubernetes.utils.create_from_yaml(admin, yaml_objects=objects)
    yield fake, admin
    fake.stop()


def server_config(image: str) -> str:
    return yaml.safe_dump(
        {
            "execution_configs": {
                "team": {
                    "backend": "kubernetes",
                    "image": image,
                    "description": "a kernel pod next to the server pod",
                    "kubernetes": {
                        "in_cluster": True,
                        "namespace": NS,
                        "image_pull_policy": "Never",
                        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
                    },
                    "permissions": {"groups": ["*"]},
                    "workspace": {"mount": "none"},
                }
            }
        }
    )


def server_pod(image: str, port: int, token: str) -> dict[str, Any]:
    """The server's pod as the README describes it: its service account, host network
    (here), the config from a Secret volume (a ConfigMap on a real cluster)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NS, "labels": {"app": "jupyter"}},
        "spec": {
            "serviceAccountName": rbac.SERVICE_ACCOUNT,
            "hostNetwork": True,
            "containers": [
                {
                    "name": "server",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": [*DEFAULT_CMD, f"--ServerApp.port={port}"],
                    "env": [
                        {"name": "DSS_CONTAINERS_CONFIG", "value": "/etc/dss/config.yaml"},
                        {"name": "JUPYTER_TOKEN", "value": token},
                    ],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/dss"}],
                }
            ],
            "volumes": [{"name": "config", "secret": {"secretName": "dss-config"}}],
        },
    }


def _api(port: int, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    return http(method, f"http://127.0.0.1:{port}/{path}", body, headers, timeout=120)


def _server_log(fake) -> str:
    try:
        return fake.kubelet.container(NS, POD).logs().decode(errors="replace")[-4000:]
    except Exception as exc:  # not started
        return f"(no container: {exc}; pod {fake.pods(NS)})"


def _wait_for_server(fake, port: int, token: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pod = fake.objects["pods"].get((NS, POD))
        if pod and pod["status"].get("phase") in ("Failed", "Succeeded"):
            pytest.fail(f"the server pod ended:\n{_server_log(fake)}")
        try:
            if _api(port, token, "GET", "api/status")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server pod did not answer:\n{_server_log(fake)}")


def _doctor(fake) -> tuple[int, str]:
    """``jupyter dss-containers doctor`` run inside the server pod (its env, its token)."""
    result = fake.kubelet.container(NS, POD).exec_run(
        ["jupyter", "dss-containers", "doctor", "--json"]
    )
    return result.exit_code, result.output.decode(errors="replace")


def _kernel_pods(fake) -> list[dict[str, Any]]:
    return [
        p
        for p in fake.pods(NS)
        if (p["metadata"].get("labels") or {}).get(ownership.KIND) == "kernel"
    ]


def _without(admin, resource: str) -> None:
    rules = [r for r in rbac.role_rules() if r["resources"] != [resource]]
    kubernetes.client.RbacAuthorizationV1Api(admin).patch_namespaced_role(
        rbac.ROLE, NS, [{"op": "replace", "path": "/rules", "value": rules}]
    )


def _wait_job(port: int, token: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 240
    state: dict[str, Any] = {}
    while state.get("state") not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
        state = _api(port, token, "GET", f"dss-containers/api/jobs/{job_id}")[1]
    return state


def _stop_server(core, fake) -> None:
    """Delete the server pod gracefully (SIGTERM: it stops its kernels) and wait for it."""
    core.delete_namespaced_pod(POD, NS, grace_period_seconds=30)
    deadline = time.monotonic() + 60
    while (NS, POD) in fake.objects["pods"] and time.monotonic() < deadline:
        time.sleep(0.2)


def test_the_server_in_a_pod_starts_kernels_on_its_service_account(
    cluster, server_image, base_image
):
    """Guards the in-cluster deployment end to end: the server pod (shipped Role, nothing
    more) passes doctor, starts a kernel pod through the HTTPS API (verified with the
    mounted ca.crt), reaches it at its pod IP, runs code and stops it, without a single
    request refused; the kernel pod itself gets no token. Then, with ``pods/log`` taken
    from the Role, doctor names that verb and a job (whose output is read through the log
    API) fails with the apiserver's 403 in its error; once the server pod is stopped no pod
    of ours is left. (Taking ``watch`` off the shipped Role fails the kernel start here.)"""
    fake, admin = cluster
    core = kubernetes.client.CoreV1Api(admin)
    config = base64.b64encode(server_config(base_image).encode()).decode()
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "dss-config"}, "data": {"config.yaml": config}}
    )
    port, token = free_port(), secrets.token_hex(16)
    core.create_namespaced_pod(NS, server_pod(server_image, port, token))
    try:
        _wait_for_server(fake, port, token)
        given = fake.kubelet.identity.given
        assert fake.rbac.accounts[given[(NS, POD)]] == (NS, rbac.SERVICE_ACCOUNT)
        env = fake.kubelet.container(NS, POD).attrs["Config"]["Env"]
        assert f"KUBERNETES_SERVICE_PORT={fake.port}" in env

        code, out = _doctor(fake)
        assert code == 0, out
        (row,) = json.loads(out)
        assert row["ok"] and row["engine"].startswith("kubernetes"), row
        assert row["daemon"].startswith(f"https://127.0.0.1:{fake.port}"), row

        status, configs = _api(port, token, "GET", "dss-containers/api/configs")
        assert status == 200 and [c["name"] for c in configs["configs"]] == ["team"], configs
        status, kernel = _api(port, token, "POST", "api/kernels", {"name": "dss-team"})
        assert status == 201, (kernel, _server_log(fake))
        (pod,) = _kernel_pods(fake)
        assert pod["status"]["podIP"].startswith("127.0.11.")  # its own pod IP, not the host's
        assert (NS, pod["metadata"]["name"]) not in given  # automount off: no token inside
        url = f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels"
        from tornado.httpclient import HTTPRequest

        request = HTTPRequest(f"{url}?session_id={secrets.token_hex(8)}")
        request.headers["Authorization"] = f"token {token}"
        out = asyncio.run(ws_execute(request, "jovyan", "print(6 * 7)", strict=True))
        assert out.strip() == "42"
        assert _api(port, token, "DELETE", f"api/kernels/{kernel['id']}")[0] == 204
        deadline = time.monotonic() + 60
        while _kernel_pods(fake):
            assert time.monotonic() < deadline, "the kernel pod was not deleted"
            time.sleep(0.2)
        assert fake.rbac.refused == []  # not even a 403 the backend would swallow

        _without(admin, "pods/log")
        code, out = _doctor(fake)
        assert code == 1, out
        (row,) = json.loads(out)
        assert f"namespace {NS}: not allowed to get pods/log;" in row["error"], row
        job_code = "print('from the job')"
        status, job = _api(
            port, token, "POST", "dss-containers/api/jobs", {"config": "team", "code": job_code}
        )
        assert status in (200, 201, 202), job
        state = _wait_job(port, token, job["id"])
        assert state["state"] == "failed", state
        refusal = (
            f'is forbidden: User "{SA_USER}" cannot get resource "pods/log" '
            f'in API group "" in the namespace "{NS}"'
        )
        assert refusal in (state.get("error") or ""), state
        assert [r[1:] for r in fake.rbac.refused] == [("get", "pods/log", NS)] * len(
            fake.rbac.refused
        )
        _stop_server(core, fake)
        left = [
            p["metadata"]["name"]
            for p in fake.pods(NS)
            if (p["metadata"].get("labels") or {}).get(ownership.MANAGED) == "true"
        ]
        assert left == []  # the failed job's pod went with it: nothing orphaned
    finally:
        if (NS, POD) in fake.objects["pods"]:
            _stop_server(core, fake)
