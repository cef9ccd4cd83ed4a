"""``c.ContainerProvisioner.launch_timeout`` and ``c.WarmPool.ready_timeout`` set in a real
Jupyter server's config are the timeouts in force (issue 13: both were once declared and
never applied: a module constant and a parentless pool had the last word).

The images of these configs never become a kernel: their entrypoint ignores the kernel's
command and sleeps (no kernel_info reply ever comes) or exits at once. Both timeouts are
set far below their defaults (120 s); each test observes the configured value in what the
server reports.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import time

import pytest
import tornado.httpclient
from conftest import leftover_containers
from test_server_api import ME, api, jp_asyncio_loop, server_config, use_config  # noqa: F401

from jupyter_dss_containers import ownership

pytestmark = pytest.mark.docker
pytest_plugins = ["jupyter_server.pytest_plugin"]

LAUNCH_TIMEOUT = 4.0
READY_TIMEOUT = 3.0
DEFAULT = 120.0  # both traits' default

CONFIG = """
execution_configs:
  never-ready:
    backend: docker
    image: {image}
    permissions: {{groups: ["*"]}}
  dies-at-boot:
    backend: docker
    image: {dying}
    permissions: {{groups: ["*"]}}
  pooled-never-ready:
    backend: docker
    image: {image}
    warm_pool: {{size: 1}}
    permissions: {{groups: ["*"]}}
"""


def image_running(docker_client, base_image: str, name: str, script: str) -> str:
    """The base image with an entrypoint that runs ``script`` (the kernel's argv ignored)."""
    tag = f"dss-containers-test/{name}:{base_image.rsplit(':', 1)[-1]}"
    entrypoint = json.dumps(["/bin/sh", "-c", script, "--"])
    dockerfile = f"FROM {base_image}\nENTRYPOINT {entrypoint}\n"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    context.seek(0)
    docker_client.images.build(
        fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True
    )
    return tag


@pytest.fixture(scope="module")
def never_ready_image(docker_client, base_image) -> str:
    return image_running(docker_client, base_image, "never-ready", "exec sleep 3600")


@pytest.fixture(scope="module")
def dies_at_boot_image(docker_client, base_image) -> str:
    return image_running(docker_client, base_image, "dies-at-boot", "echo boot-failed >&2; exit 3")


@pytest.fixture
def jp_server_config(tmp_path, monkeypatch, never_ready_image, dies_at_boot_image):
    text = CONFIG.format(image=never_ready_image, dying=dies_at_boot_image)
    path = use_config(tmp_path, monkeypatch, text)
    config = server_config(path)
    config["ContainerProvisioner"] = {"launch_timeout": LAUNCH_TIMEOUT}
    # one refill only: the test looks at what the first one left
    config["WarmPool"] = {"ready_timeout": READY_TIMEOUT, "refill_interval": 3600.0}
    return config


async def test_a_kernel_that_never_answers_fails_within_the_configured_launch_timeout(
    jp_fetch, jp_serverapp, docker_client
):
    """Guards ``launch_timeout`` being read, from the server's config: left unread, the
    start would return a kernel that never answers (or wait the default 120 s); the error
    names the configured 4 s, and the container is removed."""
    started = time.monotonic()
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch(
            "api",
            "kernels",
            method="POST",
            body=json.dumps({"name": "dss-never-ready"}),
            headers={"X-Test-User": ME},
            request_timeout=DEFAULT,
        )
    took = time.monotonic() - started
    assert caught.value.code == 503, caught.value.response.body
    message = json.loads(caught.value.response.body)["message"]
    assert "did not answer within 4 s (ContainerProvisioner.launch_timeout)" in message, message
    assert "it was removed" in message
    assert took < DEFAULT, f"gave up after {took:.0f} s, not before the default"
    server_id = ownership.this_process().server_id
    assert not leftover_containers(
        docker_client, kind="kernel", config="never-ready", server_id=server_id
    )


async def test_a_kernel_whose_container_exits_while_booting_fails_the_start_saying_why(
    jp_fetch, jp_serverapp, docker_client
):
    """Guards the container's state as the liveness signal of a start: without it the start
    would wait out the launch timeout (or return a dead kernel); it fails with the exit code
    and the container's last log line, and the container is removed."""
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch(
            "api",
            "kernels",
            method="POST",
            body=json.dumps({"name": "dss-dies-at-boot"}),
            headers={"X-Test-User": ME},
            request_timeout=DEFAULT,
        )
    assert caught.value.code == 503, caught.value.response.body
    message = json.loads(caught.value.response.body)["message"]
    assert "stopped before the kernel answered: exited with code 3" in message, message
    assert "boot-failed" in message and "launch_timeout" not in message, message
    server_id = ownership.this_process().server_id
    assert not leftover_containers(
        docker_client, kind="kernel", config="dies-at-boot", server_id=server_id
    )


async def test_a_pooled_kernel_that_never_answers_is_given_up_after_the_ready_timeout(
    jp_serverapp, docker_client
):
    """Guards the warm pool being the server extension's, built from the server's config:
    a parentless pool would wait the default 120 s for kernel_info; this one gives up after
    the configured 3 s, says so, and removes the container."""
    pool = jp_serverapp.web_app.settings["dss_containers"].warm_pool
    started = time.monotonic()
    # what a server does once it serves (the pytest plugin's server stops short of it):
    # the extension starts, and with it the pool's filling
    await jp_serverapp.extension_manager.start_all_extensions()
    while pool.failure("pooled-never-ready") is None and time.monotonic() - started < DEFAULT:
        await asyncio.sleep(0.2)
    took = time.monotonic() - started
    failure = pool.failure("pooled-never-ready")
    assert failure is not None, "the pool was still waiting after the default ready timeout"
    assert "did not answer within 3 s (WarmPool.ready_timeout)" in failure, failure
    assert "removed" in failure
    assert took < DEFAULT
    assert pool.size("pooled-never-ready") == 0
    server_id = ownership.this_process().server_id
    assert not leftover_containers(
        docker_client, kind="pool", config="pooled-never-ready", server_id=server_id
    )
