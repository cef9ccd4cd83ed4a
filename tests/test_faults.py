"""Faults on the real engine: the Docker daemon restarts under running kernels, a kernel's
container is removed from outside, the disk fills during an image build.

The daemon-restart test never touches the shared dockerd (other test processes use it): it
runs a private ``dockerd`` of its own (own socket, data root, exec root, pid file and a
bridge of its own, see :class:`PrivateDockerd`) and stops and starts that one. A second
daemon with ``--bridge=none`` would delete ``docker0`` and break the first, hence the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker
import pytest
import yaml
from conftest import leftover_containers, need
from kernels import run, start

from jupyter_dss_containers import ownership, transfer
from jupyter_dss_containers.backends.docker import docker_client as client_for
from jupyter_dss_containers.config import DockerSettings, load_config
from jupyter_dss_containers.kernelspecs import install_kernel_specs
from jupyter_dss_containers.liveness import deferred_removals
from jupyter_dss_containers.permissions import process_identity

pytest_plugins = ["jupyter_server.pytest_plugin"]
pytestmark = pytest.mark.docker


# --------------------------------------------------------------------------- private dockerd


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no address or route of this host overlaps."""
    used = []
    for what in ("addr", "route"):
        out = subprocess.run(["ip", "-j", what], capture_output=True, text=True, check=True)
        for entry in json.loads(out.stdout or "[]"):
            for info in entry.get("addr_info", [entry]):
                prefix = info.get("local") or info.get("dst")
                if prefix and prefix != "default" and ":" not in prefix:
                    length = info.get("prefixlen")
                    text = f"{prefix}/{length}" if length else prefix
                    used.append(ipaddress.ip_network(text, strict=False))
    for third in range(77, 255):
        net = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 10.213.0.0/16 for the private bridge")


class PrivateDockerd:
    """A dockerd that only this test uses, stopped and started at will.

    Own socket, data root, exec root and pid file under ``folder``, and its own bridge with
    an unused address. ``--iptables=false``: the host's NAT rules stay the first daemon's;
    ports published on 127.0.0.1 still work through docker-proxy.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.socket = folder / "docker.sock"
        self.bridge = f"dssbr-t{os.getpid() % 10_000_000}"
        self.process: subprocess.Popen | None = None
        self._bridge_made = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> PrivateDockerd:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._bridge_made:
            gateway = next(_free_subnet().hosts())
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
            self._bridge_made = True
            subprocess.run(["ip", "addr", "add", f"{gateway}/24", "dev", self.bridge], check=True)
            subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)
        log = open(self.folder / "dockerd.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--host",
                self.url,
                "--data-root",
                str(self.folder / "data"),
                "--exec-root",
                str(self.folder / "exec"),
                "--pidfile",
                str(self.folder / "dockerd.pid"),
                f"--bridge={self.bridge}",
                "--iptables=false",
                "--ip-masq=false",
                "--shutdown-timeout=2",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C of pytest does not hit it before teardown
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"private dockerd exited: {self.log_tail()}")
            with contextlib.suppress(Exception):
                docker.DockerClient(base_url=self.url, timeout=5).ping()
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"private dockerd not ready after 30 s: {self.log_tail()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def close(self) -> None:
        """Stop it, remove its bridge, unmount what it left, delete its folders."""
        self.stop()
        if self._bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], check=False)
        mounts = [
            line.split()[1]
            for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.folder))
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "dockerd.log").read_text()[-2000:]
        return ""


@pytest.fixture(scope="module")
def private_daemon(workspace, base_image):
    """A private dockerd holding the base image; the shared one is never restarted."""
    if os.geteuid() != 0:
        need("a private dockerd needs root")
    if not shutil.which("dockerd") or not shutil.which("ip"):
        need("dockerd and ip (iproute2) are needed for a private daemon")
    daemon = PrivateDockerd(workspace / f"dockerd-{os.getpid()}")
    try:
        daemon.start()
        began = time.monotonic()
        asyncio.run(transfer.ensure_image(base_image, DockerSettings(host=daemon.url)))
        print(f"\nbase image into the private dockerd in {time.monotonic() - began:.1f} s")
        yield daemon
    finally:
        daemon.close()


def ours(url: str) -> list:
    """Every container of ours on a daemon, running or not."""
    client = client_for(DockerSettings(host=url))
    return client.containers.list(all=True, filters={"label": f"{ownership.MANAGED}=true"})


# --------------------------------------------------------------------------- server fixtures


@pytest.fixture
async def jp_asyncio_loop():
    """The loop pytest-asyncio runs the tests on, so the plugin's server serves on it."""
    return asyncio.get_running_loop()


@pytest.fixture
def config_path(tmp_path, monkeypatch, private_daemon):
    path = tmp_path / "faults.yaml"
    configs = {
        "local": {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}},
        "private": {
            "backend": "docker",
            "image": "default",
            "docker": {"host": private_daemon.url},
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
        # start-up reaping would touch other test processes' containers on the shared daemon
        "DSSContainersExtension": {"config_file": str(config_path), "reap_on_start": False},
        # the restarter notices a dead kernel within a second, not three
        "KernelRestarter": {"time_to_dead": 1.0},
    }


# --------------------------------------------------------------------------- daemon restart


async def _get(jp_fetch, *path: str) -> tuple[int, dict, float]:
    began = time.monotonic()
    response = await jp_fetch(*path, method="GET", request_timeout=10)
    return response.code, json.loads(response.body), time.monotonic() - began


async def test_daemon_restart_under_a_running_kernel(jp_fetch, jp_serverapp, private_daemon):
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": "dss-private"})
    )
    kernel_id = json.loads(response.body)["id"]
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        assert (await run(kc, "print(6 * 7)"))[1].strip() == "42"
        assert len(ours(private_daemon.url)) == 1

        # the daemon goes away: its containers stop with it (no live-restore)
        stopped = time.monotonic()
        await asyncio.to_thread(private_daemon.stop)
        print(f"\nprivate dockerd stopped in {time.monotonic() - stopped:.1f} s")
        reported = None
        slowest = 0.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for path in (("api", "kernels"), ("dss-containers", "api", "configs")):
                code, _, took = await _get(jp_fetch, *path)
                assert code == 200, path
                slowest = max(slowest, took)
            _, reply, took = await _get(jp_fetch, "dss-containers", "api", "kernels")
            slowest = max(slowest, took)
            rows = [r for r in reply["kernels"] if r["id"] == kernel_id]
            if rows and rows[0]["exit_reason"]:
                reported = rows[0]
                break
            await asyncio.sleep(0.2)
        assert reported is not None, "the kernel was not reported dead within 20 s"
        print(
            f"reported dead after {time.monotonic() - stopped:.1f} s: {reported['exit_reason']}"
            f"; slowest API answer {slowest:.2f} s"
        )
        # whichever came first: the daemon stopping the container, or its socket going away
        why = reported["exit_reason"]
        assert ("unreachable" in why and private_daemon.url in why) or "daemon shutting down" in why
        assert "Traceback" not in why
        assert slowest < 5

        # the daemon comes back: the restarter's restart, which waits for the daemon
        # (ContainerProvisioner.restart_wait_seconds), brings the kernel back on it
        await asyncio.sleep(1.5)  # the restart is under way, waiting
        await asyncio.to_thread(private_daemon.start)
        back = time.monotonic()
        rows = []
        while time.monotonic() - back < 40:
            _, reply, _ = await _get(jp_fetch, "dss-containers", "api", "kernels")
            rows = [r for r in reply["kernels"] if r["id"] == kernel_id]
            if rows and rows[0]["state"] == "running" and not rows[0]["exit_reason"]:
                break
            await asyncio.sleep(0.3)
        assert rows and rows[0]["state"] == "running", f"not recovered: {rows}"
        print(f"recovered {time.monotonic() - back:.1f} s after the daemon was back")
        kc.stop_channels()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=30)
        # the restarted kernel's first cell also says why the one before died (told once)
        lines = (await run(kc, "print(6 * 7)"))[1].strip().splitlines()
        assert "42" in lines, lines
        assert all(
            line == "42" or line.startswith("dss-containers: the kernel was restarted")
            for line in lines
        ), lines
        assert (await run(kc, "print(6 * 7)"))[1].strip() == "42"
        assert len(ours(private_daemon.url)) == 1  # the new container; the old one removed
    finally:
        kc.stop_channels()
        response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
        assert response.code == 204
    # nothing orphaned: no container of ours is left on the private daemon
    # (a removal the down daemon refused is retried in the background once it answers)
    for _ in range(100):
        if not ours(private_daemon.url):
            break
        await asyncio.sleep(0.1)
    assert not deferred_removals.pending
    assert not [(c.name, c.id, c.status) for c in ours(private_daemon.url)]


# --------------------------------------------------------------------------- removed from outside


async def test_container_removed_from_outside_is_reported_dead_and_next_start_works(
    workspace, base_image, docker_client, monkeypatch
):
    path = workspace / "faults-local.yaml"
    local = {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}}
    path.write_text(yaml.safe_dump({"execution_configs": {"local": local}}))
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(path))
    config_file = load_config(path)
    install_kernel_specs(config_file, process_identity(config_file))
    km, kc = await start("dss-local")
    try:
        docker_client.containers.get(km.provisioner.workload_id).remove(force=True)
        removed = time.monotonic()
        while await km.is_alive() and time.monotonic() - removed < 5:
            await asyncio.sleep(0.1)
        took = time.monotonic() - removed
        assert not await km.is_alive()
        reason = km.provisioner.exit_reason
        assert reason and "removed" in reason and "Traceback" not in reason, reason
        print(f"\nreported dead {took:.2f} s after docker rm -f: {reason}")
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    assert not leftover_containers(docker_client, kernel_id=km.kernel_id)
    # the next kernel on the same config starts and runs
    km2, kc2 = await start("dss-local")
    try:
        assert (await run(kc2, "print('again')"))[1].strip() == "again"
    finally:
        kc2.stop_channels()
        await km2.shutdown_kernel(now=False)
    assert not leftover_containers(docker_client, kernel_id=km2.kernel_id)


# --------------------------------------------------------------------------- disk full


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MiB tmpfs: room for a Dockerfile, not for a build context with wheels."""
    if os.geteuid() != 0:
        need("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_during_a_build_says_so_and_tags_nothing(
    tiny_disk, base_image, docker_client, monkeypatch
):
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import BaseImageSpec

    nonce = os.urandom(6).hex()
    spec = BaseImageSpec(
        name="faults-disk-full",
        from_image=base_image,  # a wheelhouse (megabytes) goes into the build context
        dockerfile_append=f"LABEL test.nonce={nonce}",
    )
    tag = images.base_image_tag(spec)
    monkeypatch.setenv(images.BUILD_TMPDIR_ENV, str(tiny_disk))
    began = time.monotonic()
    with pytest.raises(images.ImageBuildError) as failure:
        images.build_base_image(spec, docker_client)
    message = str(failure.value)
    print(f"\nfailed in {time.monotonic() - began:.1f} s: {message}")
    assert os.strerror(errno.ENOSPC) in message  # "No space left on device"
    assert "'faults-disk-full'" in message and str(tiny_disk) in message
    assert "Traceback" not in message
    assert not images.image_exists(docker_client, tag)  # nothing half-built is tagged
    assert not list(tiny_disk.iterdir())  # the scratch file is gone

    # room again: the same build works
    monkeypatch.delenv(images.BUILD_TMPDIR_ENV)
    began = time.monotonic()
    try:
        assert images.build_base_image(spec, docker_client) == tag
        print(f"the next build took {time.monotonic() - began:.1f} s")
        assert images.image_exists(docker_client, tag)
    finally:
        for ref in (tag, f"{tag.rsplit(':', 1)[0]}:latest"):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.images.remove(ref, noprune=False)


async def test_a_full_disk_under_the_job_store_does_not_stop_a_job(
    tiny_disk, base_image, docker_client, tmp_path, caplog
):
    """The server keeps job records on disk; when that disk is full, the job still runs and
    returns its result and log (from memory), and the failed writes are logged."""
    from job_images import job_image

    from jupyter_dss_containers.jobs import JobRequest, JobService, python_result

    with contextlib.suppress(OSError), (tiny_disk / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 65536)
    config = {
        "backend": "docker",
        "image": job_image(docker_client, base_image),
        "permissions": {"groups": ["*"]},
    }
    path = tmp_path / "store-full.yaml"
    path.write_text(yaml.safe_dump({"execution_configs": {"full": config}}))
    service = JobService(config_file=str(path), store_dir=str(tiny_disk / "jobs"))
    request = JobRequest("full", "python", "print('still here')\ntotal = 6", outputs=("total",))
    job = await asyncio.wait_for(service.wait((await service.submit(request)).id), 60)
    assert job.state == "succeeded", job.message
    assert (await python_result(service, job.id))["outputs"] == {"total": 6}
    assert "still here" in job.logs()
    assert "could not keep job" in caplog.text and "No space left on device" in caplog.text


OWNER_THEN_EXIT = """
import asyncio, os, sys
from jupyter_dss_containers.jobs import JobRequest, JobService

async def main():
    service = JobService(config_file=sys.argv[1], store_dir=sys.argv[2])
    code = "import time\\ntime.sleep(2)\\nprint('finished unwatched')\\n6 * 7"
    job = await service.submit(JobRequest("private", "python", code))
    while job.state != "running":
        await asyncio.sleep(0.05)
    print(job.id, flush=True)
    os._exit(0)  # as if killed: nothing is cleaned up

asyncio.run(main())
"""


async def test_a_job_whose_daemon_is_away_at_start_up_is_taken_over_when_it_is_back(
    private_daemon, tmp_path
):
    """A process dies with a job running; the job ends; its daemon goes away. A new process
    starting then waits for the daemon instead of failing the job, and collects it."""
    import sys

    from jupyter_dss_containers.jobs import JobService

    path = tmp_path / "private.yaml"
    private = {
        "backend": "docker",
        "image": "default",
        "docker": {"host": private_daemon.url},
        "permissions": {"groups": ["*"]},
    }
    path.write_text(yaml.safe_dump({"execution_configs": {"private": private}}))
    store = tmp_path / "jobs"
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OWNER_THEN_EXIT,
        str(path),
        str(store),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(owner.communicate(), 60)
    job_id = out.decode().strip()
    (box,) = [c for c in ours(private_daemon.url) if c.labels.get(ownership.JOB_ID) == job_id]
    assert (await asyncio.to_thread(box.wait, timeout=30))["StatusCode"] == 0
    await asyncio.to_thread(private_daemon.stop)
    try:
        service = JobService(config_file=str(path), store_dir=str(store), take_over_interval=0.5)
        taken = await service.recover()
        assert [job.id for job in taken] == [job_id]
        job = service.get(job_id)
        assert job.state == "running" and "waiting for its daemon" in job.message, job.message
    finally:
        await asyncio.to_thread(private_daemon.start)
    await asyncio.wait_for(service.wait(job_id), 60)  # taken over, collected, removed
    assert job.state == "succeeded", job.message
    assert (await service.result(job_id)).displays == [{"text/plain": "42"}]
    assert "finished unwatched" in job.logs()
    assert not [c for c in ours(private_daemon.url) if c.labels.get(ownership.JOB_ID) == job_id]
