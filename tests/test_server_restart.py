"""A Jupyter server SIGKILLed with a kernel and jobs running, then started again (issue #8).

The new server must take over the job still running (and report its whole log and result
when it ends), collect the job that finished while no server watched (log, result and
displays kept), and reap the kernel container nobody owns any more. Real server processes,
real containers, a real kill.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import docker.errors
import pytest
from conftest import leftover_containers
from servers import ServerProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CONFIG = """
execution_configs:
  local:
    backend: docker
    image: default
    permissions: {groups: ["*"]}
"""
API = "dss-containers/api/"
SHORT = "import time\nprint('A started', flush=True)\ntime.sleep(4)\nprint('A finished')\n6 * 7\n"
# runs until the test lets it end (a file made by `docker exec`): no race with a slow start
GO = "/tmp/dss-test-go"
LONG = (
    "import os, time\nprint('B started', flush=True)\n"
    f"while not os.path.exists({GO!r}):\n    time.sleep(0.2)\n"
    "print('B finished')\n'bee'\n"
)


@pytest.fixture
def server_env(tmp_path, base_image) -> dict[str, str]:
    config_path = tmp_path / "dss-containers.yaml"
    config_path.write_text(CONFIG)
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(config_path))
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    return env


@pytest.fixture
def servers(tmp_path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def wait_for(what: str, check, timeout: float = 40, server: ServerProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    pytest.fail(f"{what} not seen within {timeout} s" + (f":\n{server.tail()}" if server else ""))


def job(server: ServerProcess, job_id: str) -> dict:
    status, body = server.request("GET", f"{API}jobs/{job_id}")
    assert status == 200, body
    return body


def job_log(server: ServerProcess, job_id: str) -> str:
    status, body = server.request("GET", f"{API}jobs/{job_id}/logs")
    assert status == 200, body
    return "".join(chunk["text"] for chunk in body["output"])


def test_sigkilled_server_comes_back_to_its_jobs(
    tmp_path, server_env, servers, docker_client
) -> None:
    first = ServerProcess(tmp_path / "first", server_env).start()
    servers.append(first)
    status, kernel = first.request("POST", "api/kernels", {"name": "dss-local"}, timeout=90)
    assert status == 201, kernel
    ids = {}
    for name, code in (("short", SHORT), ("long", LONG)):
        status, body = first.request("POST", f"{API}jobs", {"config": "local", "code": code})
        assert status == 201, body
        ids[name] = body["id"]
    for name, word in (("short", "A started"), ("long", "B started")):
        wait_for(f"{name} job's output", lambda n=name, w=word: w in job_log(first, ids[n]))
    (kernel_box,) = leftover_containers(docker_client, kernel_id=kernel["id"])

    first.kill()
    # the short job ends while no server runs
    (short_box,) = leftover_containers(docker_client, job_id=ids["short"])
    assert short_box.wait(timeout=30)["StatusCode"] == 0
    assert leftover_containers(docker_client, job_id=ids["long"])[0].status == "running"

    second = ServerProcess(tmp_path / "second", server_env).start()
    servers.append(second)

    # finished while down: collected, with log, result and displays
    short = wait_for(
        "the short job collected",
        lambda: (j := job(second, ids["short"]))["state"] == "succeeded" and j,
        server=second,
    )
    assert short["exit_code"] == 0 and short["error"] is None
    assert short["displays"] == [{"text/plain": "42"}]
    assert "A started" in job_log(second, ids["short"])
    assert "A finished" in job_log(second, ids["short"])
    assert not leftover_containers(docker_client, job_id=ids["short"]), "collected, not removed"

    # still running: taken over, then finished under the new server
    assert job(second, ids["long"])["state"] == "running"
    (long_box,) = leftover_containers(docker_client, job_id=ids["long"])
    assert long_box.exec_run(["touch", GO]).exit_code == 0
    long = wait_for(
        "the long job finished",
        lambda: (j := job(second, ids["long"]))["state"] == "succeeded" and j,
        server=second,
    )
    assert long["displays"] == [{"text/plain": "'bee'"}]
    log = job_log(second, ids["long"])
    assert log.count("B started") == 1 and "B finished" in log
    assert not leftover_containers(docker_client, job_id=ids["long"])

    # the kernel's container: no live process owns it, so start-up reaping removed it
    wait_for(
        "the orphaned kernel container reaped",
        lambda: not leftover_containers(docker_client, kernel_id=kernel["id"]),
        server=second,
    )
    with pytest.raises(docker.errors.NotFound):
        kernel_box.reload()

    # the records outlive this server too: a third start lists both, finished
    second.stop()
    third = ServerProcess(tmp_path / "third", server_env).start()
    servers.append(third)
    status, body = third.request("GET", f"{API}jobs")
    states = {row["id"]: row["state"] for row in body["jobs"]}
    assert states == {ids["short"]: "succeeded", ids["long"]: "succeeded"}
    assert "B finished" in job_log(third, ids["long"])
