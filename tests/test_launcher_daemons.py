"""Budgets summed over two daemons: the local dockerd and Podman's Docker API.

One launcher holds both engines (two configs of one file, each on its own daemon); a
user's budget counts her workloads on both. Podman runs as in ``test_engines.py`` (its
service on a socket of ours, the base image copied into its store from dockerd).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil

import pytest
import yaml
from conftest import need
from engines import PodmanService
from launchers import (
    LauncherProcess,
    create_each,
    create_workload,
    delete_workload,
    queued_start,
)

from jupyter_dss_containers import ownership, transfer
from jupyter_dss_containers.backends.docker import docker_client as client_for
from jupyter_dss_containers.config import DockerSettings

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def podman(workspace, base_image):
    if not shutil.which("podman"):
        need("podman is not installed (apt-get install podman catatonit)")
    service = PodmanService(workspace / f"podman-launcher-{secrets.token_hex(3)}").start()
    asyncio.run(transfer.ensure_image(base_image, DockerSettings(host=service.url)))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def two_daemons(workspace, base_image, podman, docker_client):
    """A launcher over configs ``docker`` (dockerd) and ``podman`` (Podman), 512 MiB each:
    alice's 1 GiB budget queues, bob's refuses."""
    folder = workspace / f"launcher-2d-{secrets.token_hex(3)}"
    folder.mkdir()
    common = {
        "backend": "docker",
        "image": "default",
        "permissions": {"groups": ["analysts"]},
    }
    document = {
        "groups": {"alice": ["analysts"], "bob": ["analysts"]},
        "budgets": {
            "users": {
                "alice": {"memory": "1g", "on_exceed": "queue"},
                "bob": {"memory": "1g"},  # on_exceed: refuse, the default
            }
        },
        "execution_configs": {
            "docker": {**common, "docker": {"resources": {"memory": "512m"}}},
            "podman": {
                **common,
                "docker": {"host": podman.url, "resources": {"memory": "512m"}},
            },
        },
    }
    config = folder / "launcher.yaml"
    config.write_text(yaml.safe_dump(document))
    process = LauncherProcess(folder, config).start()
    yield process
    process.stop()
    label = f"{ownership.PREFIX}launcher={process.launcher_id}"
    for client in (docker_client, client_for(DockerSettings(host=podman.url))):
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)


def test_a_refusing_budget_counts_both_daemons_and_names_what_is_used_where(
    two_daemons, podman, docker_client
):
    """Guards the sum over every daemon of the file: with one 512 MiB kernel on dockerd and
    one on Podman, bob's third is refused at once (429) naming both, each on its config;
    the two really run on two engines (each listed by its own daemon only)."""
    made = []
    try:
        create_each(two_daemons, "bob", ("docker", "podman"), made)
        podman_client = client_for(DockerSettings(host=podman.url))
        assert podman_client.containers.get(made[1][1]["id"]).status == "running"
        dockerd_ids = {c.id for c in docker_client.containers.list()}
        assert made[0][1]["id"] in dockerd_ids and made[1][1]["id"] not in dockerd_ids
        status, body = create_workload(two_daemons, "bob", "docker")
        assert status == 429, body
        message = body["message"]
        assert "budget of user bob exceeded: memory 1 GiB of 1 GiB in use" in message
        for config, workload in made:
            assert f"kernel {workload['name']} on {config}: 512 MiB" in message
    finally:
        for config, workload in made:
            delete_workload(two_daemons, config, workload, "bob")


def test_a_queueing_budget_waits_for_room_on_either_daemon(two_daemons, podman, docker_client):
    """Guards the queue over two daemons: alice's third 512 MiB kernel (on dockerd) waits
    while her kernels on dockerd and on Podman fill her 1 GiB, and starts once the one on
    Podman is deleted."""
    made = []
    try:
        create_each(two_daemons, "alice", ("docker", "podman"), made)
        started, name = queued_start(two_daemons, "alice", "docker")
        assert not docker_client.containers.list(all=True, filters={"name": name})
        config, on_podman = made.pop()
        assert delete_workload(two_daemons, config, on_podman, "alice") == 200
        status, body = started.result(timeout=120)
        assert status == 201, body
        made.append(("docker", body))
        assert docker_client.containers.get(body["id"]).status == "running"
    finally:
        for config, workload in made:
            delete_workload(two_daemons, config, workload, "alice")
