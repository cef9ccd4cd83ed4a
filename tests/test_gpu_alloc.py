"""GPU allocation on the real Docker engine, on a daemon whose ``nvidia-smi -L`` reports two
fake GPUs (see :mod:`fakegpus`): two kernels with ``gpus: 1`` get different device ids, a
third waits in the queue (phase and position shown) and starts when one stops, a
``refuse`` config fails at once, and two server processes racing on the same daemon never
hand out the same GPU."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import containers_created, leftover_containers
from fakegpus import FAKE_GPU_IMAGE, build_fake_gpu_image
from jupyter_client import AsyncKernelManager
from kernels import config_in_use, run, start, stop

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.docker import gpualloc
from jupyter_dss_containers.backends.docker.gpus import GPU_IDS
from jupyter_dss_containers.server.gpus import gpus_of

pytestmark = pytest.mark.docker

CONFIG = f"""
execution_configs:
  gpu:
    backend: docker
    image: {FAKE_GPU_IMAGE}
    docker: {{gpus: 1, gpu_request: env, resources: {{memory: 256m}}}}
    permissions: {{groups: ["*"]}}
  gpu-refuse:
    backend: docker
    image: {FAKE_GPU_IMAGE}
    docker: {{gpus: 1, gpu_request: env, gpu_queue: {{on_busy: refuse}}}}
    permissions: {{groups: ["*"]}}
"""


@pytest.fixture(scope="module")
def gpu_config(workspace, base_image, docker_client):
    build_fake_gpu_image(docker_client, base_image)
    held = [c.name for c in docker_client.containers.list(filters={"label": GPU_IDS})]
    if held:  # another run's GPU holders would make the counts below wrong
        pytest.fail(f"containers already hold (fake) GPUs on this daemon: {held}")
    with config_in_use(workspace / "gpu.yaml", CONFIG) as config_file:
        yield config_file


def _gpu_of(docker_client, workload_id: str) -> str:
    """The GPU ids a kernel's container holds: its label, checked against its environment."""
    attrs = docker_client.api.inspect_container(workload_id)
    env = dict(e.split("=", 1) for e in attrs["Config"]["Env"])
    assert "DeviceRequests" not in attrs["HostConfig"] or not attrs["HostConfig"]["DeviceRequests"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == attrs["Config"]["Labels"][GPU_IDS]
    return env["NVIDIA_VISIBLE_DEVICES"]


async def test_two_kernels_get_different_gpus_and_a_third_waits_until_one_stops(
    gpu_config, docker_client
):
    """Guards: every kernel on GPU 0 (Docker's ``--gpus 1``), a third kernel sharing a held
    GPU instead of waiting, a queued start that does not say so, and one that does not
    start when a GPU frees."""
    started: list = []
    km3 = AsyncKernelManager(kernel_name="dss-gpu")
    third = None
    try:
        for _ in range(2):
            started.append(await start("dss-gpu"))
        ids = [_gpu_of(docker_client, km.provisioner.workload_id) for km, _ in started]
        assert sorted(ids) == ["0", "1"]
        reply, printed = await run(
            started[0][1], "import os; print(os.environ['NVIDIA_VISIBLE_DEVICES'])"
        )
        assert printed.strip() == ids[0], printed

        summary = await gpus_of(gpu_config, gpu_config.get("gpu"))
        assert (summary["free"], summary["total"]) == (0, 2), summary

        with pytest.raises(Exception, match="1 GPU\\(s\\) asked, 0 of 2 free") as refused:
            await start("dss-gpu-refuse")
        assert "held by kernel" in str(refused.value)

        third = asyncio.create_task(km3.start_kernel())
        progress = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not third.done():
            try:
                progress = km3.provisioner.backend.start_progress(km3.kernel_id)
            except (AssertionError, AttributeError):  # its backend is not made yet
                progress = None
            if progress is not None:
                break
            await asyncio.sleep(0.2)
        assert progress is not None and progress[0] == "queued", progress
        assert "position 1 in line" in progress[1] and "0 of 2 free" in progress[1]
        assert not third.done()

        km1, kc1 = started.pop(0)
        await stop(km1, kc1)
        await asyncio.wait_for(third, 60)
        kc3 = km3.client()
        kc3.start_channels()
        await kc3.wait_for_ready(timeout=60)
        started.append((km3, kc3))
        assert _gpu_of(docker_client, km3.provisioner.workload_id) == ids[0]
        summary = await gpus_of(gpu_config, gpu_config.get("gpu"))
        assert (summary["free"], summary["total"]) == (0, 2), summary
    finally:
        if third is not None and not third.done():
            third.cancel()
        for km, kc in started:
            await stop(km, kc)
    for km, _ in started:
        assert leftover_containers(docker_client, kernel_id=km.kernel_id) == []


def _holder(docker_client, job_id: str, ids: str) -> str:
    labels = {
        **ownership.workload_labels("job", "gpu", "racer", job_id=job_id),
        GPU_IDS: ids,
    }
    return docker_client.api.create_container(FAKE_GPU_IMAGE, ["sleep", "60"], labels=labels)["Id"]


def test_of_two_containers_claiming_one_gpu_the_later_created_backs_off(gpu_config, docker_client):
    """Two servers that picked GPU 0 at the same moment: each confirms against the daemon,
    and the same verdict comes out on both sides. Guards: a check that lets both keep it
    (or that counts its own container as the rival)."""
    first = _holder(docker_client, "race-first", "0")
    second = _holder(docker_client, "race-second", "0,1")
    try:
        gpualloc.confirm(docker_client.api, first, ("0",))  # no earlier rival: keeps it
        with pytest.raises(gpualloc.LostRace, match="GPU\\(s\\) 0 went to job race-first"):
            gpualloc.confirm(docker_client.api, second, ("0", "1"))
    finally:
        for container in (first, second):
            docker_client.api.remove_container(container, force=True)


RACER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from jupyter_dss_containers import ownership
    from jupyter_dss_containers.backends.base import WorkloadSpec
    from jupyter_dss_containers.backends.docker import DockerBackend
    from jupyter_dss_containers.config import load_config

    tag, go, image = sys.argv[1], sys.argv[2], sys.argv[3]
    backend = DockerBackend(load_config().get("gpu-refuse"))
    backend.client().ping()
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.005)

    async def one(i):
        labels = ownership.workload_labels("job", "gpu-refuse", "racer", job_id=f"race-{tag}-{i}")
        spec = WorkloadSpec(name=f"dss-race-{tag}-{i}-{os.getpid()}", image=image,
                            command=["sleep", "120"], labels=labels)
        try:
            w = await backend.create(spec)
            return {"ok": w.id}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def main():
        return await asyncio.gather(*(one(i) for i in range(3)))

    print(json.dumps(asyncio.run(main())), flush=True)
    """
)


def test_two_server_processes_racing_on_one_daemon_never_share_a_gpu(
    gpu_config, docker_client, tmp_path
):
    """Two processes (separate state, like two Jupyter servers) start 3 GPU workloads each
    at the same instant on a daemon with 2 GPUs: exactly 2 run, on different GPUs, and the
    other 4 are refused saying the GPUs are held. Guards: any allocation that trusts its
    own memory instead of the daemon's labels, or a race check that lets both keep one."""
    go = tmp_path / "go"
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = {**os.environ, "DSS_CONTAINERS_CONFIG": os.environ["DSS_CONTAINERS_CONFIG"]}
    racers = [
        subprocess.Popen(
            [sys.executable, str(script), tag, str(go), FAKE_GPU_IMAGE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag in ("a", "b")
    ]
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready", racer.stderr.read()
        since = time.time()
        go.write_text("go")
        results = []
        for racer in racers:
            out, err = racer.communicate(timeout=180)
            results += json.loads(out.strip().splitlines()[-1])
        won = [r["ok"] for r in results if "ok" in r]
        lost = [r["error"] for r in results if "error" in r]
        assert len(won) == 2 and len(lost) == 4, results
        assert sorted(_gpu_of(docker_client, w) for w in won) == ["0", "1"]
        assert all("GPUsBusy" in e and "0 of 2 free" in e for e in lost), lost
        holders = docker_client.containers.list(all=True, filters={"label": GPU_IDS})
        assert sorted(h.id for h in holders) == sorted(won)  # losers removed their containers
        made = containers_created(docker_client, since, owner="racer")
        print(f"\n{len(made)} containers created for 2 GPUs: {len(made) - 2} lost a race")
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
        for container in leftover_containers(docker_client, owner="racer"):
            container.remove(force=True)


def test_the_probe_runs_once_per_daemon_and_a_failing_probe_says_why(gpu_config, docker_client):
    """Guards: a probe container per start (the cache lost), a probe left behind, and a
    probe that fails into "0 GPUs" instead of an error naming the command."""
    from jupyter_dss_containers.backends.base import BackendError
    from jupyter_dss_containers.backends.docker.client import daemon_url
    from jupyter_dss_containers.backends.docker.gpualloc import PROBE, daemon_gpus, forget_probe
    from jupyter_dss_containers.config import parse_config

    settings = gpu_config.get("gpu").docker
    url = daemon_url(settings)
    forget_probe(url)
    since = time.time()
    for _ in range(3):
        found = daemon_gpus(docker_client, settings, url, FAKE_GPU_IMAGE)
        assert [(g.index, g.uuid) for g in found] == [
            ("0", "GPU-fake-0000"),
            ("1", "GPU-fake-1111"),
        ]
    until = time.time()
    events = docker_client.events(
        since=f"{since:.9f}",
        until=f"{until:.9f}",
        filters={"type": "container", "event": "create", "label": PROBE},
        decode=True,
    )
    assert len(list(events)) == 1
    assert docker_client.containers.list(all=True, filters={"label": PROBE}) == []

    broken = (
        parse_config(
            {
                "execution_configs": {
                    "x": {
                        "backend": "docker",
                        "image": FAKE_GPU_IMAGE,
                        "docker": {
                            "gpus": 1,
                            "gpu_request": "env",
                            "gpu_probe": {"command": ["sh", "-c", "echo no driver >&2; exit 9"]},
                        },
                    }
                }
            },
            "broken.yaml",
        )
        .get("x")
        .docker
    )
    forget_probe(url)
    try:
        with pytest.raises(BackendError, match="exited 9: no driver"):
            daemon_gpus(docker_client, broken, url, FAKE_GPU_IMAGE)
    finally:
        forget_probe(url)


def test_doctor_checks_each_host_of_a_multi_host_config_apart(gpu_config, tmp_path):
    """Guards: a multi-host config that doctor reports as one row (a dead host hidden
    behind a live one) or crashes on."""
    path = tmp_path / "hosts.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            execution_configs:
              pool:
                backend: docker
                image: {FAKE_GPU_IMAGE}
                docker:
                  hosts:
                    - {{name: main, host: "unix:///var/run/docker.sock"}}
                    - {{name: gone, host: "unix://{tmp_path}/nothing.sock"}}
            """
        )
    )
    out = subprocess.run(
        ["jupyter", "dss-containers", "doctor", "--config", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    rows = {r["config"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"pool@main", "pool@gone"}, out
    assert rows["pool@main"]["ok"] and "(present)" in rows["pool@main"]["image"]
    assert (
        not rows["pool@gone"]["ok"] and "nothing.sock is unreachable" in rows["pool@gone"]["error"]
    )
    assert out.returncode == 1
