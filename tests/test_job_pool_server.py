"""Pooled REST jobs in a real Jupyter server: the extension fills the job pool at start,
a job posted by a user runs in the runner that waited, and stopping the server removes
the runner that took its place."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import leftover_containers
from test_server_api import ME, api, jp_asyncio_loop, server_config, use_config  # noqa: F401

from jupyter_dss_containers import ownership

pytestmark = pytest.mark.docker
pytest_plugins = ["jupyter_server.pytest_plugin"]

SAFETY = 120  # seconds before a stuck pool fails the test (never reached when it works)

CONFIG = f"""
groups: {{alice: [analysts], {ME}: [analysts]}}
execution_configs:
  pooled:
    backend: docker
    image: default
    docker: {{resources: {{memory: 300m}}}}
    warm_pool: {{jobs: 1}}
    permissions: {{groups: [analysts]}}
"""


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    return use_config(tmp_path, monkeypatch, CONFIG)


@pytest.fixture
def jp_server_config(config_path):
    return server_config(config_path)


async def until(predicate, what: str) -> None:
    deadline = time.monotonic() + SAFETY
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_server_fills_its_job_pool_and_a_rest_job_takes_the_runner(
    jp_serverapp,
    api,  # noqa: F811
    base_image,
    docker_client,
):
    """Guards the server's wiring: without the extension's prefill, the first REST job on
    a pooled config would start cold; with it, the job runs in the runner that waited
    (its own output), and the server's stop removes the refilled runner."""
    extension = jp_serverapp.web_app.settings["dss_containers"]
    service = extension.job_service
    await jp_serverapp.extension_manager.start_all_extensions()
    await until(lambda: service.job_pool.size("pooled") == 1, "the pool to fill")
    runner = service.job_pool.runners("pooled")[0]
    body = json.dumps({"config": "pooled", "code": "print('pooled hello')"})
    status, job = await api("alice", "jobs", method="POST", body=body)
    assert status == 201, job
    deadline = time.monotonic() + SAFETY
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)
        status, job = await api("alice", "jobs", job["id"])
    assert job["state"] == "succeeded", job
    assert service.get(job["id"]).workload_id == runner.workload.id
    status, logs = await api("alice", "jobs", job["id"], "logs")
    assert "pooled hello" in "".join(c["text"] for c in logs["output"])
    await until(lambda: service.job_pool.size("pooled") == 1, "the pool to refill")
    await extension.stop_extension()
    mine = ownership.this_process().server_id
    assert not leftover_containers(docker_client, server_id=mine, config="pooled")
