"""Under a real JupyterHub: users in no docker group, containers only through the launcher.

One hub for the whole module (it is slow to start): JupyterHub with configurable-http-proxy,
LocalProcessSpawner (the hub runs as root and starts each single-user server as its real OS
user: the users' own uids, no ``docker`` group; SimpleLocalProcessSpawner would run every
server as root, which holds the socket), the hub groups ``analysts`` and ``gpu-users``, and
the trusted launcher as a hub-managed service, configured by ``examples/jupyterhub_config.py``
(the README's file). Everything a user does goes through the hub's proxy URL, with the
user's own hub token. Checks poll with generous deadlines; none is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import need
from hubs import Hub, execute

from jupyter_dss_containers import ownership

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

MiB = 1024**2

CONFIG = """
budgets:
  users: {alice: {memory: 1g}}
execution_configs:
  small:
    backend: docker
    image: default
    description: 512 MiB on the local daemon
    docker: {resources: {memory: 512m, cpus: 1}}
    permissions: {groups: [analysts]}
  other:
    backend: docker
    image: default
    description: 512 MiB on the same engine, named by another address (a second daemon)
    docker: {host: "unix:///run/docker.sock", resources: {memory: 512m}}
    permissions: {groups: [analysts]}
  gpu:
    backend: docker
    image: default
    docker: {resources: {memory: 256m}}
    permissions: {groups: [gpu-users]}
"""


@pytest.fixture(scope="module")
def users():
    from osusers import os_user

    found = {}
    for name in ("alice", "bob"):
        entry = os_user(name)
        with contextlib.suppress(KeyError):
            if name in grp.getgrnam("docker").gr_mem:  # another suite may have added them
                subprocess.run(["gpasswd", "-d", name, "docker"], check=True)
        found[name] = entry
    return found


@pytest.fixture(scope="module")
def hub(workspace, base_image, docker_client, users):
    if os.geteuid() != 0:
        need("LocalProcessSpawner starts servers as their OS users: the hub must run as root")
    if shutil.which("configurable-http-proxy") is None:
        need("configurable-http-proxy (npm) is not installed")
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        need("jupyterhub is not installed (pip install -e .[test])")
    folder = workspace / f"hub-{secrets.token_hex(3)}"
    folder.mkdir()
    folder.chmod(0o700)
    config = folder / "dss_containers.yaml"
    config.write_text(CONFIG)
    config.chmod(0o600)
    hub = Hub(folder).start(config)
    try:
        hub.start_server("alice")
        hub.start_server("bob")
        yield hub
    finally:
        hub.stop()
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{ownership.PREFIX}launcher={hub.launcher_name}"}
        ):
            container.remove(force=True)


def _mine(docker_client, hub: Hub, owner: str, **labels: str) -> list:
    filters = [f"{ownership.PREFIX}launcher={hub.launcher_name}", f"{ownership.OWNER}={owner}"]
    filters += [f"{ownership.PREFIX}{k}={v}" for k, v in labels.items()]
    return docker_client.containers.list(all=True, filters={"label": filters})


def _start_kernel(hub: Hub, user: str, spec: str) -> tuple[int, Any]:
    return hub.as_user(user, "POST", f"user/{user}/api/kernels", {"name": spec})


def _raw_workload(
    hub: Hub, token: str, config: str, image_of: str | None = None, **extra: Any
) -> tuple[int, Any]:
    """A bare workload asked of the launcher directly, with the image that config (or
    ``image_of``, for one the caller is not shown) runs."""
    _, doc = hub.direct(token, "GET", "config")
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import parse_config

    config_file = parse_config(doc["config"], "launcher")
    labels = {ownership.KIND: "kernel", **extra.pop("labels", {})}
    body = {
        "name": f"dss-kernel-{secrets.token_hex(4)}",
        "image": images.resolve_image(config_file, config_file.get(image_of or config)),
        "command": ["sleep", "600"],
        "labels": labels,
        **extra,
    }
    return hub.direct(token, "POST", f"configs/{config}/workloads", body)


# --------------------------------------------------------------------------- the checks


def test_users_reach_no_engine_and_no_config_file(hub, users):
    """Guards the deployment: a user's own processes cannot use the Docker socket (not in
    the docker group) nor read the launcher's config file."""
    for name in ("alice", "bob"):
        groups = subprocess.run(["id", "-nG", name], capture_output=True, text=True).stdout
        assert "docker" not in groups.split()
    probe = (
        "import socket; s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect('/var/run/docker.sock'); print('connected')\n"
        "except OSError as e:\n    print(e.strerror)\n"
    )
    result = subprocess.run(
        ["runuser", "-u", "alice", "--", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "Permission denied"
    result = subprocess.run(
        ["runuser", "-u", "alice", "--", "cat", str(hub.folder / "dss_containers.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_each_user_lists_only_their_configs_through_the_proxy(hub):
    """Guards groups coming from the hub (read by the launcher) and the config document
    each server receives from the launcher."""
    listed = {}
    for user in ("alice", "bob"):
        status, body = hub.as_user(user, "GET", f"user/{user}/dss-containers/api/configs")
        assert status == 200, body
        listed[user] = {c["name"] for c in body["configs"]}
    assert listed == {"alice": {"small", "other"}, "bob": {"small", "other", "gpu"}}
    status, _ = hub.as_user("bob", "GET", "user/alice/dss-containers/api/configs")
    assert status == 403  # bob's token does not open alice's server
    # the CLI in her terminal, with her own token: the same list, through the launcher
    cli = "from jupyter_dss_containers.cli import main; main()"
    env = [
        f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}",
        f"DSS_CONTAINERS_LAUNCHER_URL={hub.launcher.removesuffix('api/')}",
        f"JUPYTERHUB_API_TOKEN={hub.tokens['alice']}",
    ]
    result = subprocess.run(
        [
            "runuser",
            "-u",
            "alice",
            "--",
            "env",
            *env,
            sys.executable,
            "-c",
            cli,
            "configs",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd="/tmp",
    )
    assert result.returncode == 0, result.stderr
    assert {c["name"] for c in json.loads(result.stdout)} == {"small", "other"}


def test_a_job_runs_through_the_launcher(hub, users, docker_client):
    """Guards the job service (follow_logs, read_files) over the launcher in a user's server."""
    status, job = hub.as_user(
        "alice",
        "POST",
        "user/alice/dss-containers/api/jobs",
        {"config": "small", "code": "import os\nprint('uid', os.getuid())"},
    )
    assert status in (200, 201, 202), job
    state: dict = {}

    def finished() -> bool:
        state.update(
            hub.as_user("alice", "GET", f"user/alice/dss-containers/api/jobs/{job['id']}")[1]
        )
        return state.get("state") in ("succeeded", "failed", "cancelled")

    hub.wait(finished, "alice's job", 180)
    assert state["state"] == "succeeded", state
    _, logs = hub.as_user("alice", "GET", f"user/alice/dss-containers/api/jobs/{job['id']}/logs")
    assert f"uid {users['alice'].pw_uid}" in json.dumps(logs)
    hub.wait(lambda: not _mine(docker_client, hub, "alice", kind="job"), "the job's removal")


def test_a_kernel_runs_in_a_container_as_its_user(hub, users, docker_client):
    """Guards the kernel path through the launcher: labelled with the user, run as their
    uid, reached directly by their server (the launcher is not on the data path)."""
    status, kernel = _start_kernel(hub, "alice", "dss-small")
    assert status == 201, kernel
    hub.kernels["alice-small"] = kernel["id"]
    printed = asyncio.run(execute(hub, "alice", kernel["id"], "import os; print(os.getuid())"))
    assert printed.strip() == str(users["alice"].pw_uid)
    (container,) = _mine(docker_client, hub, "alice", kind="kernel")
    assert container.attrs["Config"]["User"] == f"{users['alice'].pw_uid}:{users['alice'].pw_gid}"
    assert container.labels[ownership.CONFIG] == "small"
    status, listing = hub.as_user("alice", "GET", "user/alice/dss-containers/api/kernels")
    assert status == 200 and [k["state"] for k in listing["kernels"]] == ["running"]


def test_her_kernel_starts_in_her_home_and_sees_no_other(hub, users):
    """Guards the launcher scoping the workspace itself: alice's kernel (asked by her server)
    starts in her home, sees her files there at the same path, and not bob's home (only
    hers is mounted); broken if the launcher mounted nothing or what the caller named."""
    alice, bob = users["alice"], users["bob"]
    if "alice-small" not in hub.kernels:
        status, kernel = _start_kernel(hub, "alice", "dss-small")
        assert status == 201, kernel
        hub.kernels["alice-small"] = kernel["id"]
    marker = Path(alice.pw_dir) / f"hub-marker-{secrets.token_hex(3)}"
    marker.write_text("hers")
    os.chown(marker, alice.pw_uid, alice.pw_gid)
    marker.chmod(0o600)
    code = (
        "import os\n"
        "print(os.getcwd())\n"
        f"print(open({str(marker)!r}).read())\n"
        f"print(os.path.exists({bob.pw_dir!r}))"
    )
    printed = asyncio.run(execute(hub, "alice", hub.kernels["alice-small"], code))
    assert printed.split() == [os.path.realpath(alice.pw_dir), "hers", "False"], printed


EAVESDROP = """
import sys, time, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.connect("tcp://127.0.0.1:" + sys.argv[1])
print("listening", flush=True)
heard, end = b"", time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    if sock.poll(200):
        heard += b"".join(sock.recv_multipart())
print("heard", len(heard), b"alice-secret" in heard, flush=True)
"""


def test_another_user_cannot_read_a_kernels_output_off_its_port(hub, docker_client):
    """Guards CurveZMQ on kernel ports (the example config's transport_encryption): bob, a
    local user, subscribes to alice's kernel's iopub port on 127.0.0.1 while she prints a
    secret; without encryption he reads it (PUB sockets need no key)."""
    (container,) = _mine(docker_client, hub, "alice", kind="kernel")
    iopub = container.attrs["NetworkSettings"]["Ports"]["41001/tcp"][0]["HostPort"]
    bob = subprocess.Popen(
        ["runuser", "-u", "bob", "--", sys.executable, "-c", EAVESDROP, iopub, "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bob.stdout is not None and bob.stdout.readline().strip() == "listening"
    code = "import time\nfor i in range(20):\n    print('alice-secret', i)\n    time.sleep(0.2)"
    printed = asyncio.run(execute(hub, "alice", hub.kernels["alice-small"], code))
    assert "alice-secret 19" in printed
    out, _ = bob.communicate(timeout=120)
    assert out.split()[-1] == "False", out


def test_alice_cannot_reach_what_is_not_hers_through_the_launcher(hub, docker_client):
    """Guards the launcher's own checks against a user calling it directly with her token:
    configs outside her groups, another owner, mounts, bob's workloads, bad tokens."""
    alice = hub.tokens["alice"]
    status, doc = hub.direct(alice, "GET", "config")
    assert status == 200 and set(doc["config"]["execution_configs"]) == {"small", "other"}
    assert doc["groups"] == ["analysts"]

    status, body = _raw_workload(hub, alice, "gpu", image_of="small")
    assert status == 403 and "may not use execution configuration 'gpu'" in body["message"]
    status, body = _raw_workload(hub, alice, "small", labels={ownership.OWNER: "bob"})
    assert status == 403 and "owned by 'bob'" in body["message"]
    mount = [{"source": "/", "target": "/host", "type": "bind"}]
    status, body = _raw_workload(hub, alice, "small", mounts=mount)
    assert status == 400 and "'mounts' may not be set" in body["message"]
    assert not _mine(docker_client, hub, "alice", kind="kernel")[1:]  # only her one kernel

    status, kernel = _start_kernel(hub, "bob", "dss-gpu")
    assert status == 201, kernel
    (bobs,) = _mine(docker_client, hub, "bob", kind="kernel")
    base = f"configs/gpu/workloads/{bobs.id}"
    for method, path, body in (
        ("GET", "/status", None),
        ("GET", "/logs", None),
        ("POST", "/signal", {"signal": 9}),
        ("POST", "/stop", {"grace_seconds": 0}),
        ("DELETE", "", None),
    ):
        status, answer = hub.direct(alice, method, base + path, body)
        assert status == 404 and answer["message"] == f"no such workload: {bobs.id}", path
    bobs.reload()
    assert bobs.status == "running"

    assert hub.direct("forged" + secrets.token_hex(16), "GET", "config")[0] == 403
    assert hub.direct(None, "GET", "config")[0] == 401
    expiring = hub.token("alice", expires_in=1)
    time.sleep(3)  # let it expire (not an assertion on time)
    assert hub.direct(expiring, "GET", "config")[0] == 403
    narrow = hub.token("alice", scopes=["read:users:name!user=alice"])
    status, body = hub.direct(narrow, "GET", "config")
    assert status == 403 and "access:services!service=" in body["message"]


def test_a_budget_refuses_the_third_512m_kernel_across_two_configs(hub, docker_client):
    """Guards the per-user budget summed over two configs on two daemon addresses, refused
    at once with what is used and by what, where the user is looking (the kernel start)."""
    status, kernel = _start_kernel(hub, "alice", "dss-other")
    assert status == 201, kernel
    hub.kernels["alice-other"] = kernel["id"]
    status, body = _start_kernel(hub, "alice", "dss-small")
    assert status >= 400
    message = json.dumps(body)
    assert "budget of user alice exceeded: memory 1 GiB of 1 GiB in use" in message
    assert "on small: 512 MiB" in message and "on other: 512 MiB" in message
    assert len(_mine(docker_client, hub, "alice", kind="kernel")) == 2
    status, usage = hub.direct(hub.tokens["alice"], "GET", "usage")
    assert status == 200 and sum(w["memory"] for w in usage["workloads"]) == 1024 * MiB


def test_stopping_her_server_leaves_no_container_of_hers(hub, docker_client):
    """Guards the lifecycle bound to the hub: the admin's stop removes her kernels and the
    workload she asked of the launcher directly (which her server never knew), and only hers."""
    status, _ = hub.as_user(
        "alice", "DELETE", f"user/alice/api/kernels/{hub.kernels['alice-other']}"
    )
    assert status == 204
    hub.wait(lambda: len(_mine(docker_client, hub, "alice")) == 1, "the kernel's removal")
    status, body = _raw_workload(hub, hub.tokens["alice"], "other")
    assert status == 201, body
    assert len(_mine(docker_client, hub, "alice")) == 2
    status, _ = hub.admin("DELETE", "users/alice/server")
    assert status in (202, 204)
    hub.wait(lambda: not _mine(docker_client, hub, "alice"), "alice's containers to go", 120)
    assert len(_mine(docker_client, hub, "bob")) == 1  # bob's kernel lives on
    status, body = _raw_workload(hub, hub.tokens["alice"], "small")
    assert status == 409 and "no running server" in body["message"]
