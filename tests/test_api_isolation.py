"""One user cannot reach another's jobs or kernels, nor a config outside their groups, by
any route; a running kernel's HMAC key shows up in no REST answer, log line or manifest.

Same real server and users as tests/test_server_api.py (the ``X-Test-User`` identity
provider): alice is an analyst, bob an analyst and a GPU user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import test_server_api as server_api
from conftest import containers_created, leftover_containers
from tornado.httpclient import HTTPClientError

from jupyter_dss_containers import ownership

# the server, its config file and users, as in tests/test_server_api.py
api = server_api.api
config_path = server_api.config_path
jp_asyncio_loop = server_api.jp_asyncio_loop
jp_server_config = server_api.jp_server_config

pytest_plugins = ["jupyter_server.pytest_plugin"]


async def core(jp_fetch, user, *path, method="GET", body=None):
    """(status, JSON or None) from one of jupyter_server's own routes, as ``user``."""
    try:
        response = await jp_fetch(*path, method=method, body=body, headers={"X-Test-User": user})
    except HTTPClientError as exc:
        text = exc.response.body if exc.response is not None else b""
        return exc.code, json.loads(text) if text else None
    return response.code, json.loads(response.body) if response.body else None


SECRET = "secret of alice: 4f1c9e"
LIVE_JOB = f"print({SECRET!r}, flush=True)\nimport time\ntime.sleep(120)"


async def running_job_of(api, docker_client, user: str) -> dict:
    """A job of ``user`` on the live daemon that has printed ``SECRET`` and runs on."""
    body = json.dumps({"config": "small", "code": LIVE_JOB})
    status, job = await api(user, "jobs", method="POST", body=body)
    assert status == 201, job
    deadline = time.monotonic() + 60
    while True:
        status, logs = await api(user, "jobs", job["id"], "logs")
        if SECRET in json.dumps(logs):  # the owner reads it: there is output to leak
            break
        assert status == 200 and logs["state"] in ("queued", "starting", "running"), logs
        assert time.monotonic() < deadline, f"the job printed nothing: {logs}"
        await asyncio.sleep(0.1)
    assert [c.status for c in leftover_containers(docker_client, job_id=job["id"])] == ["running"]
    return job


# --------------------------------------------------------------------------- jobs


async def test_another_users_job_is_invisible_on_every_route(api, docker_client):
    """On a live daemon, with real output: bob's get, logs, cancel and list of alice's
    running job answer as for a job that does not exist, quote none of its output, and
    change nothing (her container runs on). Guards against an ownership check missing on
    one route (a dead-daemon job has no output to leak and no container to stop)."""
    job = await running_job_of(api, docker_client, "alice")
    job_id = job["id"]
    for path, method in (
        ((job_id,), "GET"),
        ((job_id, "logs"), "GET"),
        ((job_id,), "DELETE"),
    ):
        status, reply = await api("bob", "jobs", *path, method=method)
        assert status == 404, (path, method, reply)
        # the text of a job that does not exist: nothing tells bob it is someone's
        assert reply["message"] == f"Job does not exist: {job_id}"
        assert SECRET not in json.dumps(reply)
        missing = (await api("bob", "jobs", "0" * 12, *path[1:], method=method))[1]
        assert missing["message"] == "Job does not exist: " + "0" * 12
    status, listed = await api("bob", "jobs")
    assert status == 200 and job_id not in [j["id"] for j in listed["jobs"]]
    assert SECRET not in json.dumps(listed)
    # bob's DELETE changed nothing: alice's job runs on, on the engine too, logs and all
    status, still = await api("alice", "jobs", job_id)
    assert status == 200 and still["state"] == "running" and still["id"] == job_id
    assert [c.status for c in leftover_containers(docker_client, job_id=job_id)] == ["running"]
    assert SECRET in json.dumps((await api("alice", "jobs", job_id, "logs"))[1])
    status, cancelled = await api("alice", "jobs", job_id, method="DELETE")
    assert status == 200 and cancelled["state"] == "cancelled", cancelled
    deadline = time.monotonic() + 30
    while leftover_containers(docker_client, job_id=job_id):
        assert time.monotonic() < deadline, "alice's cancelled job's container stayed"
        await asyncio.sleep(0.2)


async def test_a_config_outside_the_callers_groups_is_refused_on_every_route(
    api, jp_fetch, docker_client
):
    """Guards the check on every route, before anything starts: no container of the config
    is ever made (the engine's event log, not only none left afterwards)."""
    began = time.time()
    refusals = [
        await api("alice", "configs", "gpu"),
        await api("alice", "configs", "gpu", "test", method="POST"),
        await api("alice", "jobs", method="POST", body='{"config": "gpu", "code": "1"}'),
        await core(jp_fetch, "alice", "api", "kernels", method="POST", body='{"name": "dss-gpu"}'),
    ]
    for status, reply in refusals:
        assert status == 403, reply
        assert "'gpu'" in reply["message"] and "gpu-users" in reply["message"]
    assert "gpu" not in [c["name"] for c in (await api("alice", "configs"))[1]["configs"]]
    mine = ownership.this_process().server_id  # the test server runs in this process
    assert containers_created(docker_client, began, config="gpu", server_id=mine) == []


async def forbidden_session(jp_fetch) -> tuple[int, dict]:
    body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "dss-gpu"}}
    return await core(jp_fetch, "alice", "api", "sessions", method="POST", body=json.dumps(body))


async def test_a_session_on_a_forbidden_config_is_refused_with_the_reason(jp_fetch, docker_client):
    began = time.time()
    status, reply = await forbidden_session(jp_fetch)
    assert status >= 400
    assert "'gpu'" in reply["message"] and "gpu-users" in reply["message"]
    assert "Traceback" not in json.dumps(reply)
    # nothing left behind: no session, no kernel
    assert (await core(jp_fetch, "alice", "api", "sessions")) == (200, [])
    assert (await core(jp_fetch, "alice", "api", "kernels")) == (200, [])
    mine = ownership.this_process().server_id
    assert containers_created(docker_client, began, config="gpu", server_id=mine) == []


async def test_a_session_on_a_forbidden_config_answers_403(jp_fetch):
    assert (await forbidden_session(jp_fetch))[0] == 403


# --------------------------------------------------------------------------- kernels


async def start_kernel(jp_fetch, user: str, name: str = "dss-small") -> str:
    status, reply = await core(
        jp_fetch, user, "api", "kernels", method="POST", body=json.dumps({"name": name})
    )
    assert status == 201, reply
    return reply["id"]


async def shut_down(jp_fetch, docker_client, kernel_id: str) -> None:
    await core(jp_fetch, "alice", "api", "kernels", kernel_id, method="DELETE")
    for _ in range(50):
        if not leftover_containers(docker_client, kernel_id=kernel_id):
            return
        await asyncio.sleep(0.1)
    assert not leftover_containers(docker_client, kernel_id=kernel_id)


@pytest.mark.docker
async def test_a_running_kernels_key_is_in_no_answer_log_or_container_record(
    api, jp_fetch, jp_serverapp, base_image, docker_client, caplog
):
    caplog.set_level(logging.DEBUG)
    kernel_id = await start_kernel(jp_fetch, "alice")
    try:
        manager = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        key = manager.session.key.decode()
        assert len(key) >= 32
        seen = []
        for user in ("alice", "bob"):
            for route in ("kernels", "jobs", "configs", "images"):
                seen.append(await api(user, route))
        seen.append(await core(jp_fetch, "alice", "api", "kernels"))
        seen.append(await core(jp_fetch, "alice", "api", "kernels", kernel_id))
        seen.append(await core(jp_fetch, "alice", "api", "sessions"))
        for status, reply in seen:
            assert status == 200, reply
            assert key not in json.dumps(reply), "the HMAC key is in a REST answer"

        mine = (await api("alice", "kernels"))[1]["kernels"]
        assert [k["id"] for k in mine] == [kernel_id] and mine[0]["state"] == "running"
        assert kernel_id not in [k["id"] for k in (await api("bob", "kernels"))[1]["kernels"]]

        [container] = leftover_containers(docker_client, kernel_id=kernel_id)
        assert key not in json.dumps(container.attrs), "the HMAC key is in docker inspect"
        assert key.encode() not in container.logs(), "the HMAC key is in the container's logs"
        assert "dss_containers" in caplog.text or "dss-small" in caplog.text  # logs were caught
        assert key not in caplog.text, "the HMAC key is in the server's or provisioner's logs"
    finally:
        await shut_down(jp_fetch, docker_client, kernel_id)
    assert key not in caplog.text


@pytest.mark.docker
async def test_another_user_cannot_reach_a_kernel_through_jupyter_servers_routes(
    api, jp_fetch, jp_ws_fetch, base_image, docker_client
):
    """OwnedKernelManager: alice's kernel "does not exist" for bob on every core route."""
    kernel_id = await start_kernel(jp_fetch, "alice")
    session = {"path": "b.ipynb", "type": "notebook", "kernel": {"id": kernel_id}}
    status, alices_session = await core(
        jp_fetch, "alice", "api", "sessions", method="POST", body=json.dumps(session)
    )
    assert status == 201, alices_session
    try:
        attempts = {
            "get": await core(jp_fetch, "bob", "api", "kernels", kernel_id),
            "interrupt": await core(
                jp_fetch, "bob", "api", "kernels", kernel_id, "interrupt", method="POST", body=""
            ),
            "restart": await core(
                jp_fetch, "bob", "api", "kernels", kernel_id, "restart", method="POST", body=""
            ),
            "delete": await core(jp_fetch, "bob", "api", "kernels", kernel_id, method="DELETE"),
            "attach a session": await core(
                jp_fetch,
                "bob",
                "api",
                "sessions",
                method="POST",
                body=json.dumps({**session, "path": "c.ipynb"}),
            ),
            "delete the session": await core(
                jp_fetch, "bob", "api", "sessions", alices_session["id"], method="DELETE"
            ),
        }
        for what, (status, reply) in attempts.items():
            assert status in (404, 410), f"bob's {what} answered {status}: {reply}"
        with pytest.raises(HTTPClientError) as refused:
            await jp_ws_fetch(
                "api", "kernels", kernel_id, "channels", headers={"X-Test-User": "bob"}
            )
        assert refused.value.code == 404
        assert (await core(jp_fetch, "bob", "api", "kernels")) == (200, [])
        assert (await core(jp_fetch, "bob", "api", "sessions")) == (200, [])
        # alice still has it all, untouched
        status, model = await core(jp_fetch, "alice", "api", "kernels", kernel_id)
        assert status == 200 and model["execution_state"] != "restarting", model
        assert [s["id"] for s in (await core(jp_fetch, "alice", "api", "sessions"))[1]] == [
            alices_session["id"]
        ]
        channels = await jp_ws_fetch(
            "api", "kernels", kernel_id, "channels", headers={"X-Test-User": "alice"}
        )
        channels.close()
        for _ in range(100):  # the server closes its side (and its ZMQ streams) before we go on
            model = (await core(jp_fetch, "alice", "api", "kernels", kernel_id))[1]
            if model["connections"] == 0:
                break
            await asyncio.sleep(0.05)
        assert model["connections"] == 0, model
    finally:
        await core(jp_fetch, "alice", "api", "sessions", alices_session["id"], method="DELETE")
        await shut_down(jp_fetch, docker_client, kernel_id)


# --------------------------------------------------------------------------- Kubernetes


def test_a_pod_manifest_carries_no_private_file_but_its_secret_does():
    """The kernel's connection file (with the key) travels in a Secret, never in the Pod."""
    import base64

    from jupyter_dss_containers.backends.base import WorkloadSpec
    from jupyter_dss_containers.backends.kubernetes import KubernetesBackend
    from jupyter_dss_containers.config import parse_config

    config = parse_config(
        {"execution_configs": {"k": {"backend": "kubernetes", "image": "python:3.12-slim"}}},
        "test",
    ).get("k")
    key = "0123456789abcdef-the-hmac-key-fedcba9876543210"
    connection = json.dumps({"key": key, "signature_scheme": "hmac-sha256"}).encode()
    spec = WorkloadSpec(
        name="dss-kernel-x",
        image="python:3.12-slim",
        command=["python3", "-m", "ipykernel_launcher", "-f", "/run/dss/kernel.json"],
        labels={"dss-containers/kernel-id": "x"},
        env={"A": "b"},
        files={"/run/dss/kernel.json": connection},
        ports=(5555,),
    )
    backend = KubernetesBackend(config)
    pod = json.dumps(backend.pod_manifest(spec))
    secret = backend.secret_manifest(spec)
    assert key not in pod and base64.b64encode(connection).decode() not in pod
    assert secret["kind"] == "Secret"
    assert any(base64.b64decode(v) == connection for v in secret["data"].values())
