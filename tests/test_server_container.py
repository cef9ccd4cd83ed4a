"""The Jupyter server itself in a Docker container, still starting kernels and jobs in
containers (issue 16, item 2).

Real parts only: the server image built by ``build-server-image`` (offline, content-addressed),
a real launcher on the host in shared-secret mode, the server container started with the
README's ``docker run`` line (no daemon socket inside), and a kernel started through the
server's REST API that runs in a sibling container and is driven over the server's websocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
import zmq
from conftest import leftover_containers, need
from launchers import LauncherProcess
from servers import free_port, ws_execute

from jupyter_dss_containers import ownership
from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.images.server_image import build_server_image
from jupyter_dss_containers.images.server_recipe import LABEL_SERVER, docker_run_command

#: the first build of the image (about 3 minutes here, more on a busier host) is in the
#: first test's setup: pytest's 300 s default would cut it
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

USER = "srvnb"
LAUNCHER_CONFIG = """
execution_configs:
  small:
    backend: docker
    image: default
    description: a kernel next to the server container
    docker: {resources: {memory: 512m, cpus: 1}}
    permissions: {groups: ["*"]}
"""


@pytest.fixture(scope="module")
def server_image(docker_client, base_image) -> str:
    """Built once per content (a no-op when it exists, as in a second CI run)."""
    spec = load_config(None).base_images["default"]
    return build_server_image(spec, docker_client)[0]


def _docker(*args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kw)


def _call(port: int, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{path}",
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _wait_for_server(name: str, port: int, token: str) -> None:
    """Poll /api/status; fail at once with the container's log if it exits."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = _docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        if state != "true":
            pytest.fail(f"the server container stopped:\n{_docker('logs', name).stderr[-3000:]}")
        try:
            if _call(port, token, "GET", "api/status")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server container did not answer:\n{_docker('logs', name).stderr[-3000:]}")


async def _execute(port: int, token: str, kernel_id: str, code: str) -> str:
    """Run code on the kernel through the server's websocket; return what it printed."""
    from tornado.httpclient import HTTPRequest

    url = f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4()}"
    request = HTTPRequest(url, headers={"Authorization": f"token {token}"})
    return await ws_execute(request, USER, code)


def test_a_second_build_of_the_server_image_is_a_no_op(server_image, docker_client):
    """Guards the content tag: the CLI finds the same tag (same wheels, same package
    contents, same recipe) and builds nothing; a tag that moved with each build would fail."""
    before = docker_client.images.get(server_image).id
    cli = "from jupyter_dss_containers.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", cli, "build-server-image"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"up to date server image: {server_image}" in result.stdout, result.stdout
    assert docker_client.images.get(server_image).id == before
    labels = docker_client.images.get(server_image).labels
    assert labels[LABEL_SERVER] == "true"


def test_the_server_in_a_container_runs_kernels_and_jobs_in_sibling_containers(
    server_image, docker_client, workspace
):
    """Guards the whole deployment: the server container holds no daemon socket and still
    starts a kernel (REST) that runs in a labelled sibling container as the user's uid, is
    driven over the server's websocket (loopback shared through --network host) with its
    ports on 127.0.0.1 encrypted (a local subscriber without keys reads none of its output),
    writes a file into the workspace at the same absolute path the server sees; a job runs
    too; the kernel of a server killed hard is reaped by the next server's start-up; and
    stopping the server container leaves no kernel container behind."""
    from osusers import os_user, owned_by

    if shutil.which("docker") is None:
        need("the docker command line client")
    user = os_user(USER)
    base = workspace / f"srv-{secrets.token_hex(3)}"
    notebooks = owned_by(base / USER, user)
    owned_by(notebooks / "sub", user)
    config = base / "launcher.yaml"
    config.write_text(LAUNCHER_CONFIG)
    launcher = LauncherProcess(base, config, (f"--workspace-root={base}/${{user}}",)).start()
    secret = base / "server.secret"  # the server's copy of the shared secret, the user's
    secret.write_text(launcher.secret)
    secret.chmod(0o400)
    os.chown(secret, user.pw_uid, user.pw_gid)
    name, port, token = (
        f"dss-test-server-{secrets.token_hex(4)}",
        free_port(),
        secrets.token_hex(16),
    )
    argv = docker_run_command(
        server_image,
        notebooks=str(notebooks),
        launcher_url=launcher.url,
        secret_file=str(secret),
        user=USER,
        uid_gid=f"{user.pw_uid}:{user.pw_gid}",
        port=port,
        name=name,
    )
    try:
        _docker(*argv[1:], env={**os.environ, "JUPYTER_TOKEN": token})
        _wait_for_server(name, port, token)
        attrs = docker_client.containers.get(name).attrs
        assert attrs["HostConfig"]["NetworkMode"] == "host"
        assert not [m for m in attrs["Mounts"] if "docker.sock" in m["Source"]]
        probe = "test -e /var/run/docker.sock && echo present || echo absent"
        assert _docker("exec", name, "sh", "-c", probe).stdout.strip() == "absent"

        listed = _docker("exec", name, "jupyter", "labextension", "list")
        assert "jupyter-dss-containers" in listed.stdout + listed.stderr  # the sidebar is in
        status, configs = _call(port, token, "GET", "dss-containers/api/configs")
        assert status == 200 and [c["name"] for c in configs["configs"]] == ["small"], configs
        assert configs["user"] == USER  # the name the launcher maps to the OS user
        assert configs["source"] == f"launcher {launcher.url}"  # the server holds no config
        status, specs = _call(port, token, "GET", "api/kernelspecs")
        assert status == 200 and "dss-small" in specs["kernelspecs"], specs
        status, kernel = _call(
            port, token, "POST", "api/kernels", {"name": "dss-small", "path": "sub"}
        )
        assert status == 201, kernel
        (container,) = leftover_containers(docker_client, launcher=launcher.launcher_id)
        assert container.labels[ownership.OWNER] == USER
        assert container.labels[ownership.KIND] == "kernel"
        assert container.labels[ownership.HOST] == name  # the container's own host name
        assert container.attrs["Config"]["User"] == f"{user.pw_uid}:{user.pw_gid}"
        binds = [(m["Source"], m["Destination"]) for m in container.attrs["Mounts"]]
        assert (str(notebooks), str(notebooks)) in binds

        ports = container.attrs["NetworkSettings"]["Ports"]
        assert {b["HostIp"] for bound in ports.values() for b in bound} == {"127.0.0.1"}
        eavesdropper = zmq.Context.instance().socket(zmq.SUB)
        eavesdropper.setsockopt(zmq.SUBSCRIBE, b"")
        eavesdropper.connect(f"tcp://127.0.0.1:{ports['41001/tcp'][0]['HostPort']}")

        code = (
            "import os, socket, time\n"
            "for i in range(10):\n"
            "    print('srv-secret', i, end=' ')\n"
            "    time.sleep(0.2)\n"
            "open('from-kernel.txt', 'w').write('written in ' + socket.gethostname())\n"
            "print(os.getcwd(), os.getuid())"
        )
        out = asyncio.run(_execute(port, token, kernel["id"], code))
        assert out.split()[-2:] == [str(notebooks / "sub"), str(user.pw_uid)], out
        assert "srv-secret 9" in out
        heard = b""
        while eavesdropper.poll(500):
            heard += b"".join(eavesdropper.recv_multipart())
        eavesdropper.close()
        assert b"srv-secret" not in heard  # CurveZMQ: a local subscriber without keys reads nothing
        written = f"written in {container.attrs['Config']['Hostname']}"
        seen = _docker("exec", name, "cat", str(notebooks / "sub" / "from-kernel.txt")).stdout
        assert seen == written  # the server container sees the kernel's file at that path
        assert (notebooks / "sub" / "from-kernel.txt").read_text() == written  # so does the host

        job_code = "import os\nprint('job as', os.getuid())"
        status, job = _call(
            port, token, "POST", "dss-containers/api/jobs", {"config": "small", "code": job_code}
        )
        assert status in (200, 201, 202), job
        state: dict = {}
        deadline = time.monotonic() + 180
        while state.get("state") not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
            state = _call(port, token, "GET", f"dss-containers/api/jobs/{job['id']}")[1]
        assert state["state"] == "succeeded", state
        logs = _call(port, token, "GET", f"dss-containers/api/jobs/{job['id']}/logs")[1]
        assert f"job as {user.pw_uid}" in json.dumps(logs)

        # killed hard, the server leaves its kernel; the next one's start-up reaper takes it
        _docker("kill", name)
        assert [c.id for c in leftover_containers(docker_client, launcher=launcher.launcher_id)]
        _docker("rm", name)
        _docker(*argv[1:], env={**os.environ, "JUPYTER_TOKEN": token})
        _wait_for_server(name, port, token)
        deadline = time.monotonic() + 120
        while leftover_containers(docker_client, launcher=launcher.launcher_id):
            assert time.monotonic() < deadline, "the orphaned kernel was not reaped"
            time.sleep(0.5)
        status, kernel = _call(port, token, "POST", "api/kernels", {"name": "dss-small"})
        assert status == 201, kernel
        assert leftover_containers(docker_client, launcher=launcher.launcher_id)
        _docker("stop", "-t", "60", name)  # SIGTERM: the server shuts its kernels down
        assert not leftover_containers(docker_client, launcher=launcher.launcher_id)
        launcher.stop()
        assert not leftover_containers(docker_client, launcher=launcher.launcher_id)
    finally:
        _docker("rm", "-f", name, check=False)
        launcher.stop()
        for left in leftover_containers(docker_client, launcher=launcher.launcher_id):
            left.remove(force=True)
