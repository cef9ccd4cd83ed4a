"""One config over two real Docker daemons (``docker.hosts``): the shared dockerd and a
private one of this test (see :class:`test_faults.PrivateDockerd`), behind a real Jupyter
server. Four kernels spread by free memory; with the private daemon stopped, starts go
to the other one and say why; ``GET kernels`` names each kernel's host and the reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time

import pytest
import yaml
from conftest import need
from fakegpus import FAKE_GPU_IMAGE, build_fake_gpu_image
from test_faults import PrivateDockerd, ours

from jupyter_dss_containers import transfer
from jupyter_dss_containers.backends.docker import docker_client as client_for
from jupyter_dss_containers.backends.docker.gpus import GPU_IDS
from jupyter_dss_containers.backends.docker.placement import DOCKER_HOST, PLACEMENT
from jupyter_dss_containers.config import DockerSettings

pytest_plugins = ["jupyter_server.pytest_plugin"]
pytestmark = pytest.mark.docker

MAIN = "unix:///var/run/docker.sock"


@pytest.fixture(scope="module")
def second_daemon(workspace, base_image):
    """A private dockerd holding the base image; the shared one is never restarted."""
    if os.geteuid() != 0:
        need("a private dockerd needs root")
    if not shutil.which("dockerd") or not shutil.which("ip"):
        need("dockerd and ip (iproute2) are needed for a private daemon")
    daemon = PrivateDockerd(workspace / f"dockerd-hosts-{os.getpid()}")
    try:
        daemon.start()
        began = time.monotonic()
        asyncio.run(transfer.ensure_image(base_image, DockerSettings(host=daemon.url)))
        build_fake_gpu_image(client_for(DockerSettings(host=daemon.url)), base_image)
        print(
            f"\nbase and fake-GPU images on the second daemon in {time.monotonic() - began:.1f} s"
        )
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
async def jp_asyncio_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def config_path(tmp_path, monkeypatch, second_daemon):
    path = tmp_path / "hosts.yaml"
    configs = {
        "spread": {
            "backend": "docker",
            "image": "default",
            "docker": {
                "resources": {"memory": "256m"},
                # the same room on both: only what runs there tells them apart
                "hosts": [
                    {"name": "main", "host": MAIN, "memory": "2g"},
                    {"name": "second", "host": second_daemon.url, "memory": "2g"},
                ],
            },
            "permissions": {"groups": ["*"]},
        },
        "spread-gpu": {
            "backend": "docker",
            "image": FAKE_GPU_IMAGE,
            "docker": {
                "gpus": 1,
                "gpu_request": "env",
                "resources": {"memory": "256m"},
                "hosts": [
                    {"name": "main", "host": MAIN, "memory": "2g"},
                    {"name": "second", "host": second_daemon.url, "memory": "2g"},
                ],
            },
            "permissions": {"groups": ["*"]},
        },
    }
    path.write_text(yaml.safe_dump({"execution_configs": configs}))
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(path))
    return path


@pytest.fixture
def jp_server_config(config_path):
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_dss_containers": True},
            "kernel_spec_manager_class": (
                "jupyter_dss_containers.kernelspecs.ContainerKernelSpecManager"
            ),
        },
        "DSSContainersExtension": {"config_file": str(config_path), "reap_on_start": False},
    }


async def _start(jp_fetch, name: str = "dss-spread") -> str:
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    return json.loads(response.body)["id"]


async def _rows(jp_fetch) -> dict[str, dict]:
    response = await jp_fetch("dss-containers", "api", "kernels", method="GET")
    return {r["id"]: r for r in json.loads(response.body)["kernels"]}


async def _until_running(jp_fetch, kernel_ids: list[str]) -> dict[str, dict]:
    deadline = time.monotonic() + 60
    while True:
        rows = await _rows(jp_fetch)
        if all(rows.get(k, {}).get("state") == "running" for k in kernel_ids):
            return rows
        if time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.3)


async def test_four_kernels_spread_by_free_memory_and_a_dead_host_is_skipped_saying_why(
    jp_fetch, jp_serverapp, second_daemon, caplog
):
    """Guards: placement by list order (all four on the first daemon), a placement that
    does not count what already runs on a daemon, ids that lose their host (the kernel's
    calls then go to the wrong daemon), a dead daemon that fails the start instead of
    being skipped, and a GET kernels answer that does not say where and why."""
    caplog.set_level(logging.INFO)
    kernels: list[str] = []
    try:
        for _ in range(4):
            kernels.append(await _start(jp_fetch))
        rows = await _until_running(jp_fetch, kernels)
        hosts = [rows[k]["host"] for k in kernels]
        assert hosts == ["main", "second", "main", "second"], rows
        for k in kernels:
            assert rows[k]["workload_id"].startswith(rows[k]["host"] + "/")
            assert "most free memory" in rows[k]["placement"], rows[k]
        # the second start saw the first kernel's 256 MiB on main
        assert (
            "host second (most free memory: 2 GiB of 2 GiB memory free"
            in (rows[kernels[1]]["placement"])
        )
        assert "main (1.75 GiB of 2 GiB memory free" in rows[kernels[1]]["placement"]
        on_second = {
            c.labels["dss-containers.jupyter.org/kernel-id"] for c in ours(second_daemon.url)
        }
        assert on_second == {kernels[1], kernels[3]}
        for k in kernels:
            container = rows[k]["workload_id"].split("/", 1)[1]
            where = second_daemon.url if rows[k]["host"] == "second" else MAIN
            labels = {c.id: c.labels for c in ours(where)}[container]
            assert labels[DOCKER_HOST] == rows[k]["host"] and labels[PLACEMENT]
        # the server's own log says where each kernel went and why
        logged = [r.getMessage() for r in caplog.records if r.name == "ServerApp"]
        assert any(
            f"Kernel {kernels[1]} placed on host second (most free memory" in m for m in logged
        )

        # the kernels talk: calls go to the daemon each one runs on
        for k in (kernels[1], kernels[3]):
            await jp_fetch("api", "kernels", k, method="DELETE")
        kernels = [kernels[0], kernels[2]]
        assert ours(second_daemon.url) == []

        second_daemon.stop()
        kernels.append(await _start(jp_fetch))
        rows = await _until_running(jp_fetch, kernels)
        row = rows[kernels[-1]]
        assert row["state"] == "running" and row["host"] == "main", row
        assert "skipped: second (Docker daemon at unix://" in row["placement"], row
        assert "is unreachable" in row["placement"], row
    finally:
        for k in kernels:
            with contextlib.suppress(Exception):  # already gone
                await jp_fetch("api", "kernels", k, method="DELETE")
        if second_daemon.process is None or second_daemon.process.poll() is not None:
            second_daemon.start()


async def test_gpu_kernels_go_to_the_host_with_most_free_gpus_and_configs_count_them(
    jp_fetch, jp_serverapp, second_daemon
):
    """Two daemons with two (fake) GPUs each: the second GPU kernel goes to the daemon
    with more free GPUs, each daemon's GPUs are counted apart (ids repeat across daemons,
    not on one), and GET configs shows free/total per host. Guards: GPUs counted over
    all daemons as one pool, or placement by memory alone."""
    kernels: list[str] = []
    try:
        for _ in range(3):
            kernels.append(await _start(jp_fetch, "dss-spread-gpu"))
        rows = await _until_running(jp_fetch, kernels)
        assert [rows[k]["host"] for k in kernels] == ["main", "second", "main"], rows
        assert "most free GPUs, then memory: 2 of 2 GPUs free" in rows[kernels[1]]["placement"]
        held = {}
        for k in kernels:
            host, container = rows[k]["workload_id"].split("/", 1)
            where = second_daemon.url if host == "second" else MAIN
            labels = {c.id: c.labels for c in ours(where)}[container]
            held.setdefault(host, []).append(labels[GPU_IDS])
        assert sorted(held["main"]) == ["0", "1"] and held["second"] == ["0"], held
        response = await jp_fetch("dss-containers", "api", "configs", method="GET")
        configs = {c["name"]: c for c in json.loads(response.body)["configs"]}
        gpus = configs["spread-gpu"]["gpus"]
        assert (gpus["free"], gpus["total"]) == (1, 4), gpus
        assert [(h["name"], h["free"], h["total"]) for h in gpus["hosts"]] == [
            ("main", 0, 2),
            ("second", 1, 2),
        ]
        assert "gpus" not in configs["spread"]
        assert configs["spread"]["target"] == (
            f"docker hosts main ({MAIN}), second ({second_daemon.url})"
        )
    finally:
        for k in kernels:
            with contextlib.suppress(Exception):
                await jp_fetch("api", "kernels", k, method="DELETE")


async def test_a_job_runs_on_the_host_with_room_and_an_orphan_there_is_reaped(
    jp_fetch, jp_serverapp, second_daemon
):
    """A job of the multi-host config runs on the second daemon (the first holds a kernel),
    its output and result come back through the host-prefixed id, and a container of a
    gone server on the second daemon is reaped through the config. Guards: job calls or
    the reaper aimed at the first daemon only, and replies that leave the API's schema."""
    from test_server_api import check_schema

    from jupyter_dss_containers import ownership
    from jupyter_dss_containers.config import load_config

    kernel = await _start(jp_fetch)
    orphan = None
    try:
        rows = await _until_running(jp_fetch, [kernel])
        assert rows[kernel]["host"] == "main", rows
        response = await jp_fetch("dss-containers", "api", "kernels", method="GET")
        check_schema("/kernels", "get", 200, json.loads(response.body))
        response = await jp_fetch("dss-containers", "api", "configs", method="GET")
        check_schema("/configs", "get", 200, json.loads(response.body))

        body = json.dumps({"config": "spread", "code": "print('hello from a host')"})
        response = await jp_fetch("dss-containers", "api", "jobs", method="POST", body=body)
        job = json.loads(response.body)
        made_on_second = set()
        deadline = time.monotonic() + 120
        while job["state"] not in ("succeeded", "failed", "cancelled"):
            made_on_second |= {
                c.labels.get("dss-containers.jupyter.org/job-id") for c in ours(second_daemon.url)
            }
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
            response = await jp_fetch("dss-containers", "api", "jobs", job["id"], method="GET")
            job = json.loads(response.body)
        assert job["state"] == "succeeded", job
        assert job["id"] in made_on_second
        response = await jp_fetch("dss-containers", "api", "jobs", job["id"], "logs", method="GET")
        logs = json.loads(response.body)
        assert "hello from a host" in "".join(c["text"] for c in logs["output"])

        client = client_for(DockerSettings(host=second_daemon.url))
        labels = {
            **ownership.workload_labels("kernel", "spread", "nobody", kernel_id="orphan-1"),
            ownership.SERVER_ID: "a-server-that-is-gone",
        }
        orphan = client.api.create_container(FAKE_GPU_IMAGE, ["true"], labels=labels)["Id"]
        removed, skipped = await ownership.reap_orphans([load_config().get("spread")])
        assert skipped == {}, skipped
        assert f"second/{orphan}" in [w.id for w in removed]
        assert orphan not in [c.id for c in ours(second_daemon.url)]
        assert kernel in {
            c.labels.get("dss-containers.jupyter.org/kernel-id") for c in ours(MAIN)
        }  # the live kernel is left alone
    finally:
        with contextlib.suppress(Exception):
            await jp_fetch("api", "kernels", kernel, method="DELETE")
        if orphan is not None:
            with contextlib.suppress(Exception):
                client_for(DockerSettings(host=second_daemon.url)).api.remove_container(
                    orphan, force=True
                )


async def test_the_proxy_route_reaches_a_kernel_on_the_second_host(
    jp_fetch, jp_serverapp, second_daemon
):
    """A web app in a kernel's container on the second daemon loads through the proxy
    route. Guards: the forwarder aimed at the first daemon (or handed the host-prefixed
    id, which no daemon knows)."""
    kernels = [await _start(jp_fetch), await _start(jp_fetch)]
    try:
        rows = await _until_running(jp_fetch, kernels)
        (there,) = [k for k in kernels if rows[k]["host"] == "second"]
        container = rows[there]["workload_id"].split("/", 1)[1]
        api = client_for(DockerSettings(host=second_daemon.url)).api
        page = (
            "import http.server as s; "
            "s.test(s.SimpleHTTPRequestHandler, port=8765, bind='127.0.0.1')"
        )
        run = api.exec_create(container, ["python3", "-c", page], workdir="/tmp")
        api.exec_start(run["Id"], detach=True)
        status, body, why = None, b"", ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = await jp_fetch(
                    "dss-containers", "proxy", there, "8765/", method="GET", follow_redirects=False
                )
                status, body = response.code, response.body
                break
            except Exception as exc:  # not listening yet
                response = getattr(exc, "response", None)
                why = f"{exc!r} {getattr(response, 'headers', {})!r}"
                await asyncio.sleep(0.3)
        assert status == 200 and b"Directory listing" in body, (status, body[:200], why)
    finally:
        for k in kernels:
            with contextlib.suppress(Exception):
                await jp_fetch("api", "kernels", k, method="DELETE")
