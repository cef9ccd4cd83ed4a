"""Warm pools on the real engine: a running kernel handed over once, then refilled.

The hand-over runs on both transports: ipc (its own socket folder, handed over with it) and
tcp (its own CurveZMQ keys, adopted by the kernel manager).
"""

from __future__ import annotations

import json
import os

import pytest
from conftest import leftover_containers
from jupyter_client import AsyncKernelManager
from kernels import start as start_kernel
from traitlets import Instance
from traitlets.config import LoggingConfigurable

from jupyter_dss_containers import ownership, transport
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager
from jupyter_dss_containers.pool import WarmPool, pool_of
from jupyter_dss_containers.provisioner import reattach

pytestmark = pytest.mark.docker

CONFIG = """
execution_configs:
  pooled:
    backend: docker
    image: default
    docker: {resources: {memory: %s}}
    transport: %s
    warm_pool: {size: 1}
    permissions: {groups: ["*"]}
"""


@pytest.fixture(params=["ipc", "tcp"])
async def pool(workspace, base_image, request):
    path = workspace / "pool.yaml"
    path.write_text(CONFIG % ("300m", request.param))
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)
    pool = WarmPool(config_file=str(path))
    yield pool, path, request.param
    await pool.stop()
    os.environ.pop("DSS_CONTAINERS_CONFIG", None)


def exists(path: str) -> bool:
    return os.path.exists(path)


def connection_file(container) -> dict:
    """The connection file a pooled kernel reads, from its folder on the host."""
    with open(os.path.join(container.labels[transport.FOLDER_LABEL], "connection.json")) as f:
        return json.load(f)


def pool_containers(docker_client) -> list:
    """Pool containers of this test process (a crashed earlier run may have left some)."""
    server_id = ownership.this_process().server_id
    return leftover_containers(docker_client, kind="pool", config="pooled", server_id=server_id)


class Host(LoggingConfigurable):
    """What the server extension is to its kernels: the holder of their warm pool."""

    warm_pool = Instance(WarmPool, allow_none=True)


async def start(pool: WarmPool | None) -> tuple[AsyncKernelManager, object]:
    """A kernel whose manager's parent holds ``pool``, as a server's kernels have."""
    return await start_kernel(
        "dss-pooled", kernel_spec_manager=ContainerKernelSpecManager(), parent=Host(warm_pool=pool)
    )


async def test_pooled_kernel_is_handed_over_once_then_refilled(pool, docker_client):
    pool, _, kind = pool
    await pool.fill_once()
    [pooled] = pool_containers(docker_client)
    assert pool.size("pooled") == 1

    km, kc = await start(pool)
    assert pool_of(km.provisioner) is pool
    assert km.provisioner.workload_id == pooled.id  # the running kernel was taken
    assert pool.size("pooled") == 0
    assert km.transport == kind
    # the kernel manager adopted the pooled kernel's own key: messages are signed and accepted
    reply = await kc.execute_interactive("x = 1", timeout=10)
    assert reply["content"]["status"] == "ok"
    assert km.session.key == km.provisioner.connection_info["key"]
    folder = km.provisioner._kernel_folder
    assert folder == pooled.labels[transport.FOLDER_LABEL]
    if kind == "tcp":  # and its own CurveZMQ keys
        assert km.curve_publickey.decode() == km.provisioner.connection_info["curve_publickey"]
    else:
        assert km.ip == f"{folder}/k"

    # its owner can reattach to it after a "server restart", though its label names nobody
    info = await km.provisioner.get_provisioner_info()
    again = await reattach(info, "dss-pooled", kernel_spec_manager=ContainerKernelSpecManager())
    assert again.provisioner.workload_id == pooled.id and await again.is_alive()

    # the pool refills with a new container; the handed-over one never comes back
    await pool.fill_once()
    assert pool.size("pooled") == 1
    # (a container's labels cannot change: the handed-over one still says kind=pool)
    [refill] = [c for c in pool_containers(docker_client) if c.id != pooled.id]
    # each pooled kernel has a key of its own, as the two kernels read it from their own
    # connection files (not the manager's copy of the first one's key): guards against
    # pooled kernels sharing one key (benchmarks/breakages.py)
    first = connection_file(pooled)
    second = connection_file(refill)
    assert first["key"] == km.session.key.decode()
    assert len(first["key"]) >= 32 and len(second["key"]) >= 32
    assert first["key"] != second["key"], "two pooled kernels share one HMAC key"
    assert refill.labels[transport.FOLDER_LABEL] != folder

    kc.stop_channels()
    await km.shutdown_kernel()
    assert not any(c.id == pooled.id for c in pool_containers(docker_client))
    assert not exists(folder), "the pooled kernel's folder outlived it"
    assert pool.size("pooled") == 1


async def test_empty_pool_falls_back_to_a_cold_start(pool, docker_client):
    pool, _, _ = pool  # never filled
    km, kc = await start(pool)
    container = docker_client.containers.get(km.provisioner.workload_id)
    assert container.labels[ownership.KIND] == "kernel"
    kc.stop_channels()
    await km.shutdown_kernel()


async def test_changed_config_drains_stale_pooled_kernels(pool, docker_client):
    pool, path, kind = pool
    await pool.fill_once()
    [old] = pool_containers(docker_client)
    assert old.attrs["HostConfig"]["Memory"] == 300 * 1024**2
    old_folder = old.labels[transport.FOLDER_LABEL]
    path.write_text(CONFIG % ("400m", kind))
    await pool.fill_once()
    [new] = pool_containers(docker_client)
    assert new.id != old.id
    assert new.attrs["HostConfig"]["Memory"] == 400 * 1024**2
    assert not exists(old_folder), "a drained kernel's folder was left behind"


async def test_stopping_the_pool_removes_its_containers(pool, docker_client):
    pool, _, _ = pool
    await pool.fill_once()
    assert len(pool_containers(docker_client)) == 1
    await pool.stop()
    assert pool_containers(docker_client) == []


async def test_a_kernel_outside_a_server_takes_from_no_pool(pool, docker_client):
    """Guards "no parentless singleton": a filled pool that no parent of the kernel holds
    (a plain kernel manager outside a server) is not taken from."""
    pool, _, _ = pool
    await pool.fill_once()
    [pooled] = pool_containers(docker_client)
    km, kc = await start(None)
    assert pool_of(km.provisioner) is None
    assert km.provisioner.workload_id != pooled.id and pool.size("pooled") == 1
    kc.stop_channels()
    await km.shutdown_kernel()
