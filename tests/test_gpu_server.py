"""The GPU queue as a user sees it, through a real Jupyter server with JupyterLab's pending
kernels: a third ``gpus: 1`` kernel on a daemon with two (fake) GPUs is listed by ``GET
kernels`` as queued, with its position and who holds the GPUs, ``GET configs`` shows 0 of
2 free, and the kernel runs once another is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import yaml
from fakegpus import FAKE_GPU_IMAGE, build_fake_gpu_image

from jupyter_dss_containers.backends.docker.gpus import GPU_IDS

pytest_plugins = ["jupyter_server.pytest_plugin"]
pytestmark = pytest.mark.docker


@pytest.fixture
async def jp_asyncio_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def config_path(tmp_path, monkeypatch, base_image, docker_client):
    build_fake_gpu_image(docker_client, base_image)
    path = tmp_path / "gpu.yaml"
    configs = {
        "gpu": {
            "backend": "docker",
            "image": FAKE_GPU_IMAGE,
            "docker": {"gpus": 1, "gpu_request": "env", "resources": {"memory": "256m"}},
            "permissions": {"groups": ["*"]},
        }
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
        "AsyncMultiKernelManager": {"use_pending_kernels": True},
        "DSSContainersExtension": {"config_file": str(config_path), "reap_on_start": False},
    }


async def _rows(jp_fetch) -> dict[str, dict]:
    response = await jp_fetch("dss-containers", "api", "kernels", method="GET")
    return {r["id"]: r for r in json.loads(response.body)["kernels"]}


async def _until(jp_fetch, test) -> dict[str, dict]:
    deadline = time.monotonic() + 60
    while True:
        rows = await _rows(jp_fetch)
        if test(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_a_queued_gpu_kernel_says_so_and_starts_when_a_gpu_frees(
    jp_fetch, jp_serverapp, docker_client
):
    """Guards: a queued start that GET kernels does not show as queued (or shows without
    its position and the holders), GET configs counting held GPUs as free, and a queued
    kernel that does not start when a GPU is freed by a delete."""
    kernels: list[str] = []
    try:
        for _ in range(2):
            response = await jp_fetch(
                "api", "kernels", method="POST", body=json.dumps({"name": "dss-gpu"})
            )
            kernels.append(json.loads(response.body)["id"])
        rows = await _until(
            jp_fetch, lambda r: all(r.get(k, {}).get("state") == "running" for k in kernels)
        )
        assert all(rows[k]["state"] == "running" for k in kernels), rows

        response = await jp_fetch(
            "api", "kernels", method="POST", body=json.dumps({"name": "dss-gpu"})
        )
        third = json.loads(response.body)["id"]
        kernels.append(third)
        rows = await _until(  # the start is queued at once; its GPU wait says where in line
            jp_fetch, lambda r: "in line" in (r.get(third, {}).get("message") or "")
        )
        row = rows[third]
        assert row["phase"] == "queued" and row["state"] == "starting", row
        assert "position 1 in line" in row["message"], row
        assert "0 of 2 free" in row["message"] and "held by kernel" in row["message"], row
        assert any(k in row["message"] for k in kernels[:2]), row

        response = await jp_fetch("dss-containers", "api", "configs", method="GET")
        (config,) = json.loads(response.body)["configs"]
        assert (config["gpus"]["free"], config["gpus"]["total"]) == (0, 2), config

        first = kernels.pop(0)
        freed = docker_client.api.inspect_container(rows[first]["workload_id"])
        freed_id = freed["Config"]["Labels"][GPU_IDS]
        await jp_fetch("api", "kernels", first, method="DELETE")
        rows = await _until(jp_fetch, lambda r: r.get(third, {}).get("state") == "running")
        assert rows[third]["state"] == "running" and rows[third]["phase"] == "ready", rows[third]
        labels = docker_client.api.inspect_container(rows[third]["workload_id"])["Config"]
        assert labels["Labels"][GPU_IDS] == freed_id
    finally:
        for k in kernels:
            with contextlib.suppress(Exception):
                await jp_fetch("api", "kernels", k, method="DELETE")
