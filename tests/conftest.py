"""Shared fixtures: a real Docker engine, the default base image, isolated Jupyter paths.

A test that needs Docker skips when no engine answers, except under ``CI=true``, where
that is a failure: CI must never pass by skipping the real thing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Isolate every Jupyter path before anything reads them (kernel specs, runtime files).
_ROOT = Path(tempfile.mkdtemp(prefix="dss-tests-"))
for _var, _sub in (
    ("JUPYTER_DATA_DIR", "data"),
    ("JUPYTER_RUNTIME_DIR", "runtime"),
    ("JUPYTER_CONFIG_DIR", "config"),
):
    os.environ[_var] = str(_ROOT / _sub)
    (_ROOT / _sub).mkdir()
os.environ.pop("DSS_CONTAINERS_CONFIG", None)
# No package index at run time: every pip the tests cause (code envs, mirrors, base images
# not cached yet) reads the wheels .ci/setup --test downloaded (tests/wheelhouse.py).
sys.path.insert(0, str(Path(__file__).parent))
from wheelhouse import offline_env  # noqa: E402

os.environ.update(offline_env())
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

UNDER_CI = os.environ.get("CI") == "true"


def need(reason: str) -> None:
    """Skip on a laptop without the thing; fail under CI."""
    if UNDER_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.DockerClient(base_url="unix:///var/run/docker.sock", timeout=60)
        client.ping()
    except Exception as exc:  # no engine here
        need(f"no Docker engine: {exc}")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The embedded default config's base image, built once (a no-op when up to date)."""
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    config_file = load_config(None)
    spec = config_file.base_images["default"]
    return images.build_base_image(spec, docker_client)


@pytest.fixture(scope="session")
def workspace() -> Path:
    return _ROOT


def leftover_containers(docker_client, **labels: str) -> list:
    """Containers of ours still present (running or not) with the given labels."""
    from jupyter_dss_containers import ownership

    filters = [f"{ownership.MANAGED}=true"]
    filters += [f"{ownership.PREFIX}{k.replace('_', '-')}={v}" for k, v in labels.items()]
    return docker_client.containers.list(all=True, filters={"label": filters})


def containers_created(docker_client, since: float, **labels: str) -> list[dict]:
    """The engine's own ``create`` events, from ``since`` until now, of containers of ours
    with the given labels: a container started and removed meanwhile is counted too, where
    :func:`leftover_containers` (what is left afterwards) would miss it."""
    from jupyter_dss_containers import ownership

    filters = [f"{ownership.MANAGED}=true"]
    filters += [f"{ownership.PREFIX}{k.replace('_', '-')}={v}" for k, v in labels.items()]
    until = time.time()
    events = docker_client.events(
        since=f"{since:.9f}",
        until=f"{until:.9f}",
        filters={"type": "container", "event": "create", "label": filters},
        decode=True,
    )
    return list(events)


sys.path.insert(0, str(Path(__file__).parent))
