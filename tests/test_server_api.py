"""The REST API on a real Jupyter server (jupyter_server's pytest plugin, 127.0.0.1).

Two users with different groups come from an IdentityProvider configured the ordinary way
(``ServerApp.identity_provider_class``): it needs the server's token, like the default
one, and then takes the user name from an ``X-Test-User`` header, as an authenticating
proxy would. The code under test is not mocked.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from importlib import resources

import pytest
import tornado.httpclient
import yaml
from conftest import leftover_containers
from identity_provider import HeaderIdentityProvider
from jupyter_server.auth import User
from tornado.httpclient import HTTPClientError

pytest_plugins = ["jupyter_server.pytest_plugin"]

ME = getpass.getuser()  # who the server process runs as (kernels started outside our API)

CONFIG = f"""
groups:
  alice: [analysts]
  bob: [analysts, gpu-users]
  {ME}: [analysts]
code_envs:
  sk: {{packages: [scikit-learn==1.5.2], available_for: [small]}}
execution_configs:
  small:
    backend: docker
    image: default
    description: 1 CPU, 512 MiB
    docker: {{resources: {{memory: 512m, cpus: 1}}}}
    permissions: {{groups: [analysts]}}
  gpu:
    backend: docker
    image: default
    description: with GPUs
    docker: {{gpus: all}}
    permissions: {{groups: [gpu-users]}}
  everyone:
    backend: docker
    image: default
    description: open to all
    permissions: {{groups: ["*"]}}
  dead-daemon:
    backend: docker
    image: default
    docker: {{host: "unix:///tmp/nope.sock"}}
    permissions: {{groups: [analysts]}}
  k8s:
    backend: kubernetes
    image: default
    kubernetes:
      namespace: "dss-${{user}}"
      resources: {{requests: {{cpu: "1", memory: 2Gi}}, limits: {{memory: 8Gi}}}}
    permissions: {{groups: [gpu-users]}}
"""


@pytest.fixture
async def jp_asyncio_loop():
    """The loop pytest-asyncio runs the tests on (``asyncio_mode = auto``), so that the
    server of jupyter_server's pytest plugin serves on the loop the test awaits on."""
    return asyncio.get_running_loop()


def use_config(tmp_path, monkeypatch, text: str):
    """The test server's config file, named by $DSS_CONTAINERS_CONFIG for the test."""
    path = tmp_path / "dss_containers.yaml"
    path.write_text(text)
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(path))
    return path


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    return use_config(tmp_path, monkeypatch, CONFIG)


@pytest.fixture
def jp_server_config(config_path):
    return server_config(config_path)


def server_config(config_path) -> dict:
    """A Jupyter server with the extension, our kernel specs and the test users."""
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_dss_containers": True},
            "kernel_spec_manager_class": (
                "jupyter_dss_containers.kernelspecs.ContainerKernelSpecManager"
            ),
            "identity_provider_class": HeaderIdentityProvider,
        },
        # Start-up reaping would remove the containers of other test processes: their
        # runtime folders (process registries) are not ours.
        "DSSContainersExtension": {"config_file": str(config_path), "reap_on_start": False},
        # each test server its own job store (one pytest process runs many servers)
        "JobService": {"store_dir": str(config_path.parent / "jobs")},
    }


@pytest.fixture
def api(jp_fetch):
    """``await api(user, "configs", method=..., body=...)`` -> (status, JSON reply)."""

    async def call(user, *path, method="GET", body=None, headers=None, **kwargs):
        headers = dict(headers or {})
        if user:
            headers["X-Test-User"] = user
        if method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        try:
            response = await jp_fetch(
                "dss-containers", "api", *path, method=method, body=body, headers=headers, **kwargs
            )
        except HTTPClientError as exc:
            assert exc.response is not None, exc
            return exc.code, json.loads(exc.response.body)
        return response.code, json.loads(response.body)

    return call


# --------------------------------------------------------------------------- configs


async def test_each_user_sees_only_their_configs(api):
    status, alice = await api("alice", "configs")
    assert status == 200
    assert alice["user"] == "alice" and alice["groups"] == ["analysts"]
    assert [c["name"] for c in alice["configs"]] == ["small", "everyone", "dead-daemon"]

    status, bob = await api("bob", "configs")
    assert status == 200
    assert [c["name"] for c in bob["configs"]] == ["small", "gpu", "everyone", "dead-daemon", "k8s"]

    small = next(c for c in alice["configs"] if c["name"] == "small")
    assert small["backend"] == "docker" and small["base_image"] == "default"
    assert small["resources"]["summary"] == "1 CPU, 512 MiB"
    assert small["resources"]["memory_bytes"] == 512 * 1024**2
    assert small["code_envs"] == [{"name": "sk", "description": ""}]
    assert small["kernel_specs"] == ["dss-small", "dss-small-sk"]
    assert small["groups"] == ["analysts"]

    k8s = next(c for c in bob["configs"] if c["name"] == "k8s")
    assert k8s["target"].endswith("namespace dss-bob")
    assert k8s["resources"]["limits"] == {"memory": "8Gi"}


async def test_one_config_permitted_forbidden_unknown(api):
    status, gpu = await api("bob", "configs", "gpu")
    assert status == 200 and gpu["name"] == "gpu" and gpu["resources"]["gpus"] == "all"

    status, reply = await api("alice", "configs", "gpu")
    assert status == 403
    assert "'gpu'" in reply["message"] and "gpu-users" in reply["message"]
    assert "alice" in reply["message"]

    status, reply = await api("alice", "configs", "nope")
    assert status == 404
    assert "'nope'" in reply["message"] and "gpu" not in reply["message"]


async def test_unauthenticated_requests_are_refused(api, jp_fetch):
    for path, method in (("configs", "GET"), ("configs/small/test", "POST"), ("kernels", "GET")):
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch(
                "dss-containers",
                "api",
                *path.split("/"),
                method=method,
                body=b"" if method == "POST" else None,
                headers={"Authorization": "token wrong"},
            )
        assert caught.value.code == 403, path


async def test_a_broken_config_file_is_503_naming_file_and_path(api, config_path):
    config_path.write_text(CONFIG.replace("cpus: 1}", "cpus: lots}"))
    status, reply = await api("alice", "configs")
    assert status == 503
    assert str(config_path) in reply["message"]
    assert "execution_configs.small.docker.resources.cpus" in reply["message"]


# --------------------------------------------------------------------------- test button


async def test_test_button_on_a_dead_daemon_answers_ok_false_fast(api):
    started = time.monotonic()
    status, reply = await api("alice", "configs", "dead-daemon", "test", method="POST")
    assert status == 200, reply
    assert time.monotonic() - started < 5
    assert reply["ok"] is False
    assert "unix:///tmp/nope.sock" in reply["error"]


async def test_test_button_checks_permission_and_body(api):
    status, reply = await api("alice", "configs", "gpu", "test", method="POST")
    assert status == 403 and "gpu-users" in reply["message"]

    status, reply = await api(
        "alice", "configs", "dead-daemon", "test", method="POST", body="{oops"
    )
    assert status == 400 and "invalid JSON" in reply["message"]

    status, reply = await api(
        "alice", "configs", "dead-daemon", "test", method="POST", body='{"timeout": -1}'
    )
    assert status == 400 and "timeout" in reply["message"]

    status, reply = await api(
        "alice", "configs", "dead-daemon", "test", method="POST", body='{"colour": 1}'
    )
    assert status == 400 and "'colour'" in reply["message"]


# --------------------------------------------------------------------------- jobs


async def test_jobs_run_for_their_owner_only(api, base_image, docker_client):
    status, reply = await api("alice", "jobs", method="POST", body='{"config": "gpu", "code": "1"}')
    assert status == 403 and "'gpu'" in reply["message"]
    status, reply = await api("alice", "jobs", method="POST", body='{"config": "small"}')
    assert status == 400 and "'code'" in reply["message"]

    code = "print('hi from the job')\nraise ValueError('bad input')"
    body = json.dumps({"config": "small", "code": code, "name": "demo"})
    status, job = await api("alice", "jobs", method="POST", body=body)
    assert status == 201 and job["state"] in ("queued", "starting", "running")
    check_schema("/jobs", "post", 201, job)
    deadline = time.monotonic() + 120
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)
        status, job = await api("alice", "jobs", job["id"])
    check_schema("/jobs/{job_id}", "get", 200, job)
    assert job["state"] == "failed" and "ValueError: bad input" in job["traceback"]
    assert job["owner"] == "alice" and job["config"] == "small"

    status, logs = await api("alice", "jobs", job["id"], "logs")
    check_schema("/jobs/{job_id}/logs", "get", 200, logs)
    assert "hi from the job" in "".join(c["text"] for c in logs["output"])
    status, later = await api("alice", "jobs", job["id"], "logs", params={"since": logs["next"]})
    assert later["output"] == []

    assert (await api("bob", "jobs", job["id"]))[0] == 404
    assert job["id"] not in [j["id"] for j in (await api("bob", "jobs"))[1]["jobs"]]
    status, listed = await api("alice", "jobs")
    check_schema("/jobs", "get", 200, listed)
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    status, reply = await api("alice", "jobs", job["id"], method="DELETE")
    assert status == 200 and reply["state"] == "failed"
    assert not leftover_containers(docker_client, job_id=job["id"])


def check_schema(path: str, method: str, status: int, reply: dict) -> None:
    import jsonschema

    schema = response_schema(openapi(), path, method, status)
    jsonschema.Draft202012Validator(schema).validate(reply)


# --------------------------------------------------------------------------- OpenAPI


def openapi() -> dict:
    text = resources.files("jupyter_dss_containers.schema").joinpath("openapi.yaml").read_text()
    return yaml.safe_load(text)


def response_schema(spec: dict, path: str, method: str, status: int) -> dict:
    response = spec["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    return {
        **response["content"]["application/json"]["schema"],
        "components": spec["components"],
    }


async def test_replies_match_the_openapi_schemas(api, base_image):
    import jsonschema

    spec = openapi()
    assert spec["openapi"].startswith("3.1")

    def check(path, method, status, reply):
        schema = response_schema(spec, path, method, status)
        jsonschema.Draft202012Validator(schema).validate(reply)

    check("/configs", "get", 200, (await api("bob", "configs"))[1])
    check("/configs/{name}", "get", 200, (await api("bob", "configs", "k8s"))[1])
    check("/configs/{name}", "get", 403, (await api("alice", "configs", "gpu"))[1])
    check("/configs/{name}", "get", 404, (await api("alice", "configs", "x"))[1])
    reply = (await api("alice", "configs", "dead-daemon", "test", method="POST"))[1]
    check("/configs/{name}/test", "post", 200, reply)
    reply = (await api("alice", "configs", "small", "test", method="POST", body="[]"))[1]
    check("/configs/{name}/test", "post", 400, reply)
    check("/kernels", "get", 200, (await api("alice", "kernels"))[1])
    check("/jobs", "get", 200, (await api("alice", "jobs"))[1])

    status, images = await api("alice", "images")
    check("/images", "get", 200, images)
    [default] = images["images"]  # the base image of alice's configs
    assert default["name"] == "default" and default["tag"].startswith("dss-containers/")
    assert default["used_by"] == ["small", "everyone", "dead-daemon"]
    # the local daemon has the base image (built by the fixture): present, under that tag
    assert default["tag"] == base_image and default["present"] is True, default


# --------------------------------------------------------------------------- per-request


async def test_core_kernelspec_listing_follows_the_requesting_user(jp_fetch):
    async def names(user):
        response = await jp_fetch("api", "kernelspecs", headers={"X-Test-User": user})
        return set(json.loads(response.body)["kernelspecs"])

    alice, bob = await names("alice"), await names("bob")
    assert "dss-small" in alice and "dss-gpu" not in alice
    assert "dss-gpu" in bob


async def test_starting_a_forbidden_kernel_is_refused_by_name(jp_fetch):
    """jupyter_server's own route answers 403 with our reason, not 500, and starts nothing."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch(
            "api",
            "kernels",
            method="POST",
            body=json.dumps({"name": "dss-gpu"}),
            headers={"X-Test-User": "alice"},
        )
    assert caught.value.code == 403
    message = json.loads(caught.value.response.body)["message"]
    assert "'alice' may not use execution configuration 'gpu'" in message
    assert "gpu-users" in message


# --------------------------------------------------------------------------- Docker


@pytest.mark.docker
async def test_kernels_lists_a_container_kernel_with_live_memory(
    api, jp_fetch, base_image, docker_client
):
    # Started through jupyter_server's own route, as JupyterLab does.
    response = await jp_fetch(
        "api",
        "kernels",
        method="POST",
        body=json.dumps({"name": "dss-small"}),
        headers={"X-Test-User": ME},
    )
    kernel_id = json.loads(response.body)["id"]
    try:
        status, reply = await api(ME, "kernels")
        assert status == 200, reply
        [row] = [k for k in reply["kernels"] if k["id"] == kernel_id]
        assert row["name"] == "dss-small" and row["execution_config"] == "small"
        assert row["state"] == "running" and row["owner"] == ME
        assert row["image"] == base_image
        status, images = await api(ME, "images")
        assert images["images"][0]["tag"] == base_image and images["images"][0]["present"]
        assert row["started"] and row["started"][:4].isdigit()
        assert isinstance(row["memory_bytes"], int) and row["memory_bytes"] > 0
        assert row["memory_limit"] == 512 * 1024**2
        assert leftover_containers(docker_client, kernel_id=kernel_id)

        # another user does not see it
        status, reply = await api("bob", "kernels")
        assert kernel_id not in [k["id"] for k in reply["kernels"]]

        # its logs, for its owner only (ipykernel writes to stderr as it starts)
        for _ in range(50):
            status, logs = await api(ME, "kernels", kernel_id, "logs", params={"tail": "20"})
            assert status == 200, logs
            if logs["logs"].strip():
                break
            await asyncio.sleep(0.2)
        check_schema("/kernels/{kernel_id}/logs", "get", 200, logs)
        assert logs["id"] == kernel_id and logs["error"] is None and logs["logs"].strip()
        assert len(logs["logs"].splitlines()) <= 20
        status, reply = await api("bob", "kernels", kernel_id, "logs")
        assert status == 404 and kernel_id in reply["message"]
        status, reply = await api(ME, "kernels", kernel_id, "logs", params={"tail": "x"})
        assert status == 400 and "'tail'" in reply["message"]
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", headers={"X-Test-User": ME})
    for _ in range(50):
        if not leftover_containers(docker_client, kernel_id=kernel_id):
            break
        await asyncio.sleep(0.1)
    assert not leftover_containers(docker_client, kernel_id=kernel_id)
    status, reply = await api(ME, "kernels")
    assert kernel_id not in [k["id"] for k in reply["kernels"]]


# --------------------------------------------------------------------------- identity


def test_identity_groups_from_the_hub_else_the_config_file(monkeypatch):
    from jupyter_dss_containers.config import load_config
    from jupyter_dss_containers.server.identity import call_context_identity, user_identity

    class HubUser(User):  # what JupyterHub's identity provider hands jupyter_server
        def __init__(self, model):
            self.hub_user = model
            super().__init__(username=model["name"])

    config_file = load_config(None)  # the embedded default: no groups map
    with_groups = HubUser({"name": "carol", "groups": ["gpu-users"]})
    without = HubUser({"name": "carol"})  # the token may not read groups

    monkeypatch.delenv("JUPYTERHUB_API_URL", raising=False)
    assert user_identity(with_groups, config_file).groups == frozenset()

    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
    assert user_identity(with_groups, config_file).groups == {"gpu-users"}
    assert user_identity(without, config_file).groups == frozenset()
    assert user_identity("dave", config_file).username == "dave"

    assert call_context_identity(config_file) is None  # outside any request
