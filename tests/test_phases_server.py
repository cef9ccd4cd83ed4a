"""Start phases and death reasons on a real Jupyter server, on the real Docker engine and
on the fake Kubernetes cluster (tests/fake_kube) with an image pull that takes time.

``GET kernels`` / ``GET jobs`` give each start's phases with the time spent in each; a
failed start keeps its phase history in its error; a kernel OOM-killed (a 64 MiB config, a
200 MiB allocation) is restarted by the server, ``GET kernels`` says why it died, and the
restarted kernel's first cell prints the reason first on stderr, on both backends. The
pull is held by the test until the phase was seen (no timed assertions).
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import yaml
from identity_provider import HeaderIdentityProvider
from jupyter_client import AsyncKernelManager
from kernels import config_in_use

from jupyter_dss_containers.provisioner import KernelStartError

pytest_plugins = ["jupyter_server.pytest_plugin"]
pytestmark = pytest.mark.docker

USER = "alice"


def headers() -> dict[str, str]:
    """A fresh dict per request: jp_fetch writes the server's token into the one given."""
    return {"X-Test-User": USER}


OOM_CODE = "block = b'x' * (200 * 1024 * 1024)"


@pytest.fixture(scope="module")
def fake(docker_client):
    from fake_kube.server import FakeCluster

    cluster = FakeCluster("fake-ph", docker_client, 21)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pulls(fake):
    """The fake kubelet's held pulls, none held after the test."""
    yield fake.kubelet.pulls
    fake.kubelet.pulls.clear()


def config_data(kubeconfig: str) -> dict:
    kube = {
        "kubeconfig": kubeconfig,
        "context": "fake-ph",
        "namespace": "default",
        "image_pull_policy": "IfNotPresent",
    }
    return {
        "groups": {USER: ["analysts"]},
        "execution_configs": {
            "local": {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}},
            "small64": {
                "backend": "docker",
                "image": "default",
                "docker": {"resources": {"memory": "64m"}},
                "permissions": {"groups": ["*"]},
                "workspace": {"mount": "none"},
            },
            "missing": {
                "backend": "docker",
                "image": "dss-containers/no-such-image:1",
                "permissions": {"groups": ["*"]},
            },
            "k8s": {
                "backend": "kubernetes",
                "image": "default",
                "kubernetes": kube,
                "permissions": {"groups": ["*"]},
                "workspace": {"mount": "none"},
            },
            "k8s64": {
                "backend": "kubernetes",
                "image": "default",
                "kubernetes": {**kube, "resources": {"limits": {"memory": "64Mi"}}},
                "permissions": {"groups": ["*"]},
                "workspace": {"mount": "none"},
            },
        },
    }


@pytest.fixture(scope="module")
def phases_config(fake, workspace, base_image):
    from fake_kube.server import write_kubeconfig

    kubeconfig = workspace / "kubeconfig-phases"
    write_kubeconfig(str(kubeconfig), {"fake-ph": fake}, "fake-ph")
    path = workspace / "phases.yaml"
    with config_in_use(path, yaml.safe_dump(config_data(str(kubeconfig)))) as loaded:
        yield path, loaded


@pytest.fixture
async def jp_asyncio_loop():
    return asyncio.get_running_loop()


@pytest.fixture
def jp_server_config(phases_config, monkeypatch):
    path, _ = phases_config
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(path))
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_dss_containers": True},
            "kernel_spec_manager_class": (
                "jupyter_dss_containers.kernelspecs.ContainerKernelSpecManager"
            ),
            "identity_provider_class": HeaderIdentityProvider,
        },
        "AsyncMultiKernelManager": {"use_pending_kernels": True},
        "DSSContainersExtension": {"config_file": str(path), "reap_on_start": False},
        "JobService": {"store_dir": str(path.parent / "jobs-phases")},
    }


async def kernel_row(jp_fetch, kernel_id: str) -> dict | None:
    response = await jp_fetch("dss-containers", "api", "kernels", headers=headers())
    rows = [k for k in json.loads(response.body)["kernels"] if k["id"] == kernel_id]
    return rows[0] if rows else None


async def start_kernel(jp_fetch, name: str) -> str:
    body = json.dumps({"name": name})
    response = await jp_fetch("api", "kernels", method="POST", body=body, headers=headers())
    return json.loads(response.body)["id"]


async def row_until(jp_fetch, kernel_id: str, done, tries: int = 1200) -> dict:
    row = None
    for _ in range(tries):
        row = await kernel_row(jp_fetch, kernel_id)
        if row is not None and done(row):
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"kernel {kernel_id} never got there: {row}")


def names(row: dict) -> list[str]:
    return [p["phase"] for p in row["phases"]]


async def test_docker_kernel_start_phases_in_get_kernels(jp_fetch, jp_serverapp):
    """Guards: GET kernels without the start's phases or their timings, a phase missing
    from a Docker start, a finished start not saying ready."""
    kernel_id = await start_kernel(jp_fetch, "dss-local")
    try:
        await asyncio.wait_for(jp_serverapp.kernel_manager.get_kernel(kernel_id).ready, 120)
        row = await kernel_row(jp_fetch, kernel_id)
        assert names(row) == ["queued", "starting", "booting", "ready"], row
        assert row["phase"] == "ready" and row["message"] == "the kernel answered"
        assert all(p["seconds"] >= 0 for p in row["phases"])
        assert row["phases"][1]["message"].startswith("creating container dss-kernel-")
        assert row["died"] is None
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", headers=headers())


async def test_kubernetes_kernel_shows_a_slow_pull_then_its_size(jp_fetch, jp_serverapp, pulls):
    """Guards: a pod pulling its image shown as "starting" (or nothing), the pull's size
    and time lost, the pull's phase not closed when the kernel boots."""
    release = threading.Event()
    pulls.hold("dss-containers/base-default:" + jp_tag(), release=release)
    kernel_id = await start_kernel(jp_fetch, "dss-k8s")
    try:
        row = await row_until(jp_fetch, kernel_id, lambda r: r["phase"] == "pulling")
        assert row["message"].startswith('Pulling image "dss-containers/base-default:')
        assert names(row)[:2] == ["queued", "scheduling"] and row["phases"][-1]["current"]
        release.set()
        await asyncio.wait_for(jp_serverapp.kernel_manager.get_kernel(kernel_id).ready, 120)
        row = await kernel_row(jp_fetch, kernel_id)
        assert names(row) == [
            "queued",
            "scheduling",
            "starting",  # bound to the node
            "pulling",
            "starting",  # pulled
            "booting",
            "ready",
        ], row
        by_phase = {p["phase"]: p for p in row["phases"]}
        assert {"scheduling", "pulling", "booting", "ready"} <= set(by_phase), row
        assert by_phase["pulling"]["message"].startswith('pulled image "dss-containers/')
        assert " MiB) in " in by_phase["pulling"]["message"], by_phase["pulling"]
        assert not any(p["current"] for p in row["phases"])
    finally:
        release.set()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", headers=headers())


def jp_tag() -> str:
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    config_file = load_config()
    return images.resolve_image(config_file, config_file.get("local"), None).split(":")[-1]


async def test_failed_start_keeps_its_phase_history(phases_config):
    """Guards: a failed start's error that no longer says how far it got."""
    km = AsyncKernelManager(kernel_name="dss-missing")
    with pytest.raises(KernelStartError) as info:
        await km.start_kernel()
    message = str(info.value)
    assert "is not on the Docker daemon" in message
    assert "; start phases: queued " in message and message.split("\n")[0].endswith("failed")


async def test_job_phases_in_get_jobs(jp_fetch):
    """Guards: GET jobs without the job's start phases."""
    body = json.dumps({"config": "local", "code": "print('hi')"})
    response = await jp_fetch(
        "dss-containers", "api", "jobs", method="POST", body=body, headers=headers()
    )
    job_id = json.loads(response.body)["id"]
    for _ in range(1200):
        response = await jp_fetch("dss-containers", "api", "jobs", job_id, headers=headers())
        job = json.loads(response.body)
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.1)
    assert job["state"] == "succeeded", job
    assert [p["phase"] for p in job["phases"]] == ["queued", "starting", "ready"], job
    assert job["phase"] == "ready" and job["phases"][0]["seconds"] >= 0
    response = await jp_fetch("dss-containers", "api", "jobs", headers=headers())
    (listed,) = [j for j in json.loads(response.body)["jobs"] if j["id"] == job_id]
    assert listed["phases"] == job["phases"]


async def first_stderr(manager, code: str) -> list[str]:
    """Run ``code`` in the kernel; the stderr text it printed."""
    client = manager.client()
    client.start_channels()
    collect = Hook()
    try:
        await client.wait_for_ready(timeout=60)
        reply = await client.execute_interactive(code, timeout=60, output_hook=collect)
        assert reply["content"]["status"] == "ok", reply
    finally:
        client.stop_channels()
    return collect.stderr


class Hook:
    def __init__(self) -> None:
        self.stderr: list[str] = []

    def __call__(self, msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stderr":
            self.stderr.append(msg["content"]["text"])


@pytest.mark.parametrize("config", ["small64", "k8s64"])
async def test_oom_killed_kernel_says_why_after_its_restart(jp_fetch, jp_serverapp, config):
    """Guards: an OOM kill explained only in the server log: GET kernels' ``died`` (what
    the sidebar notifies) and the restarted kernel's first stderr line must say it."""
    kernel_id = await start_kernel(jp_fetch, f"dss-{config}")
    try:
        manager = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        await asyncio.wait_for(manager.ready, 120)
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            client.execute(OOM_CODE)
            row = await row_until(jp_fetch, kernel_id, lambda r: r["died"] is not None)
        finally:
            client.stop_channels()
        assert row["died"]["reason"] == "OOM-killed (memory limit 64 MiB)", row
        provisioner = manager.provisioner
        for _ in range(1200):  # the server's restarter starts it again
            if provisioner.workload_id and provisioner.exit_reason is None:
                break
            await asyncio.sleep(0.1)
        await asyncio.wait_for(manager.ready, 120)
        stderr = await first_stderr(manager, "print('after')")
        assert stderr, "the restarted kernel printed nothing on stderr"
        assert stderr[0].startswith("dss-containers: the kernel was restarted because it died")
        assert "OOM-killed (memory limit 64 MiB)" in stderr[0]
        assert not await first_stderr(manager, "print('again')")  # told once
        row = await kernel_row(jp_fetch, kernel_id)
        assert row["died"]["reason"].startswith("OOM-killed") and row["phase"] == "ready"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", headers=headers())


def test_container_cell_prints_the_phases_of_a_slow_pull(phases_config, pulls):
    """A ``%%container`` cell on the fake cluster whose image pull takes 3 s (a lower bound:
    the start is slow whatever the machine's speed). Guards: a cell that waits silently
    while the image pulls, the ready line without the phases' timings."""
    import nbformat
    from nbclient import NotebookClient

    pulls.hold("dss-containers/base-default:" + jp_tag(), delay=3.0)
    cells = ["%load_ext jupyter_dss_containers", "%%container k8s\nprint('hello from k8s')"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, kernel_name="python3", timeout=300, allow_errors=True).execute()
    outputs = nb.cells[1].outputs
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert "hello from k8s" in stdout, outputs
    lines = [line for line in stderr.splitlines() if line.startswith("dss-containers: ")]
    assert lines[0].startswith("dss-containers: queued"), stderr
    assert any(line.startswith('dss-containers: pulling image: Pulling image "') for line in lines)
    assert lines[-1].startswith("dss-containers: ready after "), stderr
    assert "pulling image " in lines[-1] and "scheduling " in lines[-1]
