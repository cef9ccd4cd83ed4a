"""Pooled jobs on the real engine: a job runs in a runner started before it was submitted,
each runner serves one job, the pool refills, runners are hardened as cold job containers,
and nothing is left afterwards."""

from __future__ import annotations

import asyncio
import os
import pickle
import time

import pytest
from conftest import containers_created, leftover_containers
from job_images import job_image

from jupyter_dss_containers import ownership
from jupyter_dss_containers.jobs import JobRequest, JobService, RemoteError
from jupyter_dss_containers.jobs.model import CANCELLED, RUNNING, SUCCEEDED

pytestmark = pytest.mark.docker

SAFETY = 120  # seconds before a stuck pool fails the test (never reached when it works)

CONFIG = """
execution_configs:
  pooled:
    backend: docker
    image: {image}
    read_only_root: true
    docker: {{resources: {{memory: 300m, cpus: 1, pids: 200}}}}
    warm_pool: {{jobs: 1}}
    permissions: {{groups: ["*"]}}
  cold:
    backend: docker
    image: {image}
    read_only_root: true
    docker: {{resources: {{memory: 300m, cpus: 1, pids: 200}}}}
    workspace: {{mount: none}}
    permissions: {{groups: ["*"]}}
"""


@pytest.fixture(scope="module")
def pool_config(workspace, docker_client, base_image):
    path = workspace / "job-pool.yaml"
    path.write_text(CONFIG.format(image=job_image(docker_client, base_image)))
    return str(path)


@pytest.fixture
async def service(pool_config, docker_client):
    service = JobService(config_file=pool_config, mount_cwd=False)
    yield service
    await service.shutdown()
    mine = ownership.this_process().server_id
    assert not leftover_containers(docker_client, server_id=mine, config="pooled")


def exists(path: str) -> bool:
    return os.path.exists(path)


async def until(predicate, what: str) -> None:
    deadline = time.monotonic() + SAFETY
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def ready_runner(service: JobService):
    await until(lambda: service.job_pool.size("pooled") == 1, "the pool to refill")
    return service.job_pool.runners("pooled")[0]


async def run(service: JobService, code: str, outputs=()):
    job = await service.submit(JobRequest("pooled", "python", code, outputs=tuple(outputs)))
    await service.wait(job.id)
    return job


async def test_a_pooled_job_runs_in_a_runner_started_before_it_used_once(service, docker_client):
    """The second job on a ``warm_pool: {jobs: 1}`` config runs in the container the pool
    started before it was submitted (the engine's create event precedes the submit, and no
    job container is created for it), with its own output and result; the next job gets
    another container, the used one and its folder are gone, and the pool refills (guards:
    a pool that is never taken from, a runner handed to two jobs, a folder leaked)."""
    began = time.time()
    first = await run(service, "x = 41 + 1", ["x"])  # cold: fills the pool meanwhile
    assert first.state == SUCCEEDED, first.message
    runner = await ready_runner(service)
    submitted = time.time()
    job = await run(service, "print('from a pooled runner')\ny = 6 * 7", ["y"])
    assert job.state == SUCCEEDED, job.message
    assert job.workload_id == runner.workload.id
    created = {
        e["id"]: e["timeNano"] / 1e9
        for e in containers_created(docker_client, began, config="pooled")
    }
    assert created[runner.workload.id] < submitted
    mine = ownership.this_process().server_id
    made_for_it = containers_created(docker_client, submitted, server_id=mine, job_id=job.id)
    assert made_for_it == []
    assert "from a pooled runner" in job.logs()
    result = await service.result(job.id)
    assert result.ok and pickle.loads(result.values) == {"outputs": {"y": 42}}
    assert not exists(runner.folder)
    assert not docker_client.containers.list(all=True, filters={"id": runner.workload.id})

    second = await ready_runner(service)  # refilled
    assert second.workload.id != runner.workload.id
    again = await run(service, "z = 1", ["z"])
    assert again.workload_id == second.workload.id != job.workload_id
    assert pickle.loads((await service.result(again.id)).values) == {"outputs": {"z": 1}}
    await ready_runner(service)


async def test_a_pooled_job_error_comes_back_as_a_cold_ones(service):
    """A raising cell in a pooled runner fails with its own traceback (guards: a runner
    that reports the pool's state instead of the job's)."""
    await run(service, "pass")
    await ready_runner(service)
    job = await run(service, "def f():\n    1 / 0\nf()")
    assert job.state == "failed"
    assert isinstance(job.error, RemoteError) and job.error.ename == "ZeroDivisionError"
    assert 'File "<container-cell>", line 2, in f' in job.error.traceback


async def test_a_runner_is_hardened_as_a_cold_job_container(service, docker_client):
    """The waiting runner's container has the same user, capabilities, privileges,
    read-only root and limits as a cold job's on the same settings (guards: a pool that
    creates its containers with other arguments than cold jobs)."""
    await run(service, "pass")
    runner = await ready_runner(service)
    pooled = docker_client.api.inspect_container(runner.workload.id)
    cold_job = await service.submit(
        JobRequest("cold", "python", "import time\nwhile True:\n    time.sleep(0.05)")
    )
    await until(lambda: cold_job.state == RUNNING, "the cold job to run")
    cold = docker_client.api.inspect_container(cold_job.workload_id)
    await service.cancel(cold_job.id)
    assert cold_job.state == CANCELLED

    def hardening(attrs):
        host = attrs["HostConfig"]
        keys = ("CapDrop", "CapAdd", "SecurityOpt", "Privileged", "ReadonlyRootfs", "Init")
        keys += ("Memory", "MemorySwap", "NanoCpus", "PidsLimit", "NetworkMode")
        return {k: host.get(k) for k in keys} | {"User": attrs["Config"]["User"]}

    assert hardening(pooled) == hardening(cold)
    assert hardening(pooled)["CapDrop"] == ["ALL"] and hardening(pooled)["ReadonlyRootfs"]
    assert hardening(pooled)["Memory"] == 300 * 1024 * 1024
    assert pooled["Config"]["User"] not in ("", "0", "root")
    st = os.stat(runner.folder)
    assert st.st_mode & 0o777 == 0o700
    assert f"{st.st_uid}:{st.st_gid}" == pooled["Config"]["User"]
    labels = pooled["Config"]["Labels"]
    assert labels[ownership.KIND] == "pool" and labels[ownership.OWNER] == "-"


async def test_a_cancelled_pooled_job_and_shutdown_leave_nothing(pool_config, docker_client):
    """Cancelling a pooled job removes its container and folder; shutting the service
    down removes the waiting runner too (guards: runners that outlive their process)."""
    service = JobService(config_file=pool_config, mount_cwd=False)
    await run(service, "pass")
    runner = await ready_runner(service)
    job = await service.submit(
        JobRequest("pooled", "python", "import time\nwhile True:\n    time.sleep(0.05)")
    )
    await until(lambda: job.state == RUNNING, "the pooled job to run")
    assert job.workload_id == runner.workload.id
    await service.cancel(job.id)
    assert not exists(runner.folder)
    waiting = await ready_runner(service)
    await service.shutdown()
    assert not exists(waiting.folder)
    mine = ownership.this_process().server_id
    assert not leftover_containers(docker_client, server_id=mine, config="pooled")


EXITING = """
import time
from jupyter_dss_containers import jobs
from jupyter_dss_containers.jobs import api
jobs.wait(jobs.submit("exit-pool", "x = 1").id)
while api.service().job_pool.size("exit-pool") < 1:
    time.sleep(0.05)
jobs.wait(jobs.submit("exit-pool", "x = 2").id)  # takes the runner: a refill starts
print("taken", flush=True)
"""


def test_a_process_that_exits_while_its_pool_refills_leaves_no_runner(
    workspace, docker_client, base_image, tmp_path
):
    """A kernel's own job service (the Python API) removes its runners at exit, the one
    being started at that moment included (guards: a refill that creates its container
    while the interpreter shuts down, fails to remove it, and leaves it running)."""
    import subprocess
    import sys

    path = tmp_path / "exit-pool.yaml"
    image = job_image(docker_client, base_image)
    text = CONFIG.format(image=image).replace("  pooled:", "  exit-pool:", 1)
    path.write_text(text)
    env = {**os.environ, "DSS_CONTAINERS_CONFIG": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", EXITING], env=env, capture_output=True, text=True, timeout=SAFETY
    )
    assert done.returncode == 0 and "taken" in done.stdout, done.stderr
    assert not leftover_containers(docker_client, config="exit-pool")
