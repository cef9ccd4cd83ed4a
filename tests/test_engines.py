"""Engine parity: the same kernel on local Docker, Podman, and Docker reached over TLS and SSH.

Every engine is real and on loopback (see ``engines.py``): Podman 4 serves its Docker API on
a Unix socket of ours; the local dockerd is reached as a remote daemon through a mutual-TLS
endpoint (``tcp://127.0.0.1``) and through a private sshd (``ssh://root@127.0.0.1``) that
runs ``docker system dial-stdio``. Several daemons live in one config file, and one of
them is dead.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import need
from engines import (
    Certs,
    PodmanService,
    SilentListener,
    SSHDaemon,
    TLSDockerEndpoint,
    free_port,
    make_certs,
)
from kernels import run, start

from jupyter_dss_containers import images, ownership, transfer
from jupyter_dss_containers.backends import BackendError, backend_for
from jupyter_dss_containers.backends.docker import docker_client
from jupyter_dss_containers.cli import DoctorCommand
from jupyter_dss_containers.config import BaseImageSpec, DockerSettings, load_config
from jupyter_dss_containers.imagecontract import LABEL_CODE_ENV, LABEL_EXEC_CONFIG
from jupyter_dss_containers.images import codeenv, inventory
from jupyter_dss_containers.jobs import JobRequest, JobService, RemoteError, python_result
from jupyter_dss_containers.kernelspecs import install_kernel_specs
from jupyter_dss_containers.permissions import process_identity
from jupyter_dss_containers.provisioner import KernelStartError

pytestmark = pytest.mark.docker

ENGINES = ["docker", "podman", "docker-tls", "docker-ssh"]


class Site:
    """The test's config file: one execution config per daemon, rewritten as engines join."""

    def __init__(self, path: Path):
        self.path = path
        self.configs: dict[str, dict] = {}

    def add(self, name: str, docker: dict | None = None) -> str:
        entry = {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}}
        if docker:
            entry["docker"] = docker
        self.configs[name] = entry
        self.path.write_text(yaml.safe_dump({"execution_configs": self.configs}))
        config_file = load_config(self.path)
        install_kernel_specs(config_file, process_identity(config_file))
        return f"dss-{name}"

    def settings(self, name: str) -> DockerSettings:
        return load_config(self.path).get(name).docker


@pytest.fixture(scope="module")
def site(workspace, base_image):
    path = workspace / "engines.yaml"
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)
    yield Site(path)
    os.environ.pop("DSS_CONTAINERS_CONFIG", None)


@pytest.fixture(scope="module")
def podman(workspace, base_image):
    """Podman's Docker API on a socket of ours, with the base image loaded from dockerd."""
    if not shutil.which("podman"):
        need("podman is not installed (apt-get install podman catatonit)")
    service = PodmanService(workspace / "podman").start()
    settings = DockerSettings(host=service.url)
    began = time.monotonic()
    result = asyncio.run(transfer.ensure_image(base_image, settings))
    print(
        f"\nbase image into Podman: copied={result.copied}, {result.bytes_sent / 2**20:.0f} MiB "
        f"in {time.monotonic() - began:.1f} s"
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def tls_certs(workspace) -> Certs:
    return make_certs(workspace / "tls")


@pytest.fixture(scope="module")
def tls_endpoint(tls_certs):
    endpoint = TLSDockerEndpoint(tls_certs).start()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def sshd(workspace):
    """A private sshd; the client's ~/.ssh (key, known_hosts) is the test's own HOME."""
    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        need("openssh-server is not installed")
    try:
        import paramiko  # noqa: F401  (the docker SDK's ssh:// transport)
    except ImportError:
        need("paramiko is not installed: pip install jupyter-dss-containers[ssh]")
    daemon = SSHDaemon(workspace / "ssh").start()
    home = os.environ.get("HOME")
    os.environ["HOME"] = str(daemon.home)
    yield daemon
    if home is not None:
        os.environ["HOME"] = home
    daemon.stop()


def tls_block(endpoint: TLSDockerEndpoint, certs: Certs, **overrides: str) -> dict:
    tls = {
        "ca_cert": str(certs.ca),
        "client_cert": str(certs.client_cert),
        "client_key": str(certs.client_key),
    }
    tls.update(overrides)
    return {"host": endpoint.url, "tls": tls}


@pytest.fixture
def engine(request, site) -> str:
    """The config name of one engine (its daemon started once per module)."""
    name = request.param
    if name == "docker":
        site.add(name)
    elif name == "podman":
        site.add(name, {"host": request.getfixturevalue("podman").url})
    elif name == "docker-tls":
        endpoint = request.getfixturevalue("tls_endpoint")
        site.add(name, tls_block(endpoint, request.getfixturevalue("tls_certs")))
    elif name == "docker-ssh":
        site.add(name, {"host": request.getfixturevalue("sshd").url})
    return name


def ours_on(settings: DockerSettings, kernel_id: str) -> list:
    """Containers of a kernel on the daemon the config names (listed through that daemon)."""
    client = docker_client(settings)
    labels = [f"{ownership.MANAGED}=true", f"{ownership.KERNEL_ID}={kernel_id}"]
    return client.containers.list(all=True, filters={"label": labels})


@pytest.mark.parametrize("engine", ENGINES, indirect=True)
async def test_kernel_execute_interrupt_restart_shutdown(engine, site):
    settings = site.settings(engine)
    km, kc = await start(f"dss-{engine}")
    try:
        # a local daemon's kernels are on ipc sockets; remote ones on TCP with CurveZMQ
        assert km.transport == ("ipc" if engine in ("docker", "podman") else "tcp")
        assert bool(km.curve_publickey) == (km.transport == "tcp")
        first = km.provisioner.workload_id
        assert [c.id for c in ours_on(settings, km.kernel_id)] == [first]
        _, printed = await run(kc, "import socket, os; print(socket.gethostname(), os.getuid())")
        # a remote daemon shares no folder with the server: the first cell says so, once
        remote = engine not in ("docker", "podman")
        assert ("notebook's files are not visible" in printed) == remote, printed
        ours = [line for line in printed.splitlines() if line and "dss-containers:" not in line]
        hostname, uid = ours[-1].split()
        assert hostname == first[:12]  # it ran in that container, on that daemon
        assert uid != "0"

        running = asyncio.ensure_future(run(kc, "import time; time.sleep(60)", timeout=60))
        await asyncio.sleep(1.0)
        await km.interrupt_kernel()
        # the 60 s sleep ends with KeyboardInterrupt, long before it would have ended itself
        reply, _ = await asyncio.wait_for(running, timeout=30)
        assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"

        await km.restart_kernel(now=True)
        await kc.wait_for_ready(timeout=60)
        second = km.provisioner.workload_id
        assert second != first
        _, printed = await run(kc, "print(6 * 7)")
        assert printed.strip() == "42"
        assert [c.id for c in ours_on(settings, km.kernel_id)] == [second]
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)
    assert ours_on(settings, km.kernel_id) == []


async def test_a_dead_daemon_fails_only_its_own_configs(site, podman, tls_endpoint, tls_certs):
    dead_port = free_port()
    site.add("docker")
    site.add("podman", {"host": podman.url})
    site.add("docker-tls", tls_block(tls_endpoint, tls_certs))
    site.add("dead", {"host": f"tcp://127.0.0.1:{dead_port}"})
    km, kc = await start("dss-docker")
    try:
        began = time.monotonic()
        with pytest.raises(KernelStartError) as failed:
            await start("dss-dead")
        assert time.monotonic() - began < 15  # seconds, not the SDK's 60 s timeout (a loaded host)
        message = str(failed.value)
        assert f"tcp://127.0.0.1:{dead_port}" in message and "connection refused" in message

        # the kernel on the live daemon never noticed
        _, printed = await run(kc, "print(6 * 7)")
        assert printed.strip() == "42"

        # doctor checks each daemon on its own: one dead, the others answer with their engine
        began = time.monotonic()
        results = await DoctorCommand()._check_all(load_config(site.path))
        assert time.monotonic() - began < 15  # seconds, not the SDK's 60 s timeout (a loaded host)
        by_name = {r["config"]: r for r in results}
        assert by_name["dead"]["ok"] is False
        assert f"tcp://127.0.0.1:{dead_port}" in by_name["dead"]["error"]
        for name in ("docker", "podman", "docker-tls"):
            assert by_name[name]["ok"] is True, by_name[name]
        assert by_name["podman"]["engine"].startswith("podman 4.")
        assert by_name["docker"]["engine"].startswith("docker ")
        assert by_name["docker-tls"]["daemon"] == tls_endpoint.url
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)


async def test_wrong_tls_certificates_are_refused_saying_so(
    site, workspace, tls_endpoint, tls_certs
):
    stranger = make_certs(workspace / "tls-stranger", name="stranger")
    site.add(
        "wrong-client-cert",
        tls_block(
            tls_endpoint,
            tls_certs,
            client_cert=str(stranger.client_cert),
            client_key=str(stranger.client_key),
        ),
    )
    site.add("wrong-ca", tls_block(tls_endpoint, tls_certs, ca_cert=str(stranger.ca)))
    site.add("no-client-cert", {"host": tls_endpoint.url, "tls": {"ca_cert": str(tls_certs.ca)}})
    for name, says in (
        ("wrong-client-cert", "refused the client certificate"),
        ("no-client-cert", "refused the client certificate"),
        ("wrong-ca", "does not verify against the config's tls.ca_cert"),
    ):
        began = time.monotonic()
        with pytest.raises(KernelStartError) as failed:
            await start(f"dss-{name}")
        assert time.monotonic() - began < 15  # seconds, not the SDK's 60 s timeout (a loaded host)
        assert "TLS certificate rejected" in str(failed.value), failed.value
        assert says in str(failed.value)
        assert tls_endpoint.url in str(failed.value)


async def test_tls_ca_comes_from_the_config_not_the_environment(
    site, tls_endpoint, tls_certs, monkeypatch
):
    """requests would let REQUESTS_CA_BUNDLE replace the config's CA; we do not."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", "/nonexistent")
    site.add("tls-env", tls_block(tls_endpoint, tls_certs))
    info = await backend_for(load_config(site.path).get("tls-env")).check()
    assert info["daemon"] == tls_endpoint.url and info["engine"] == "docker"


async def test_gpu_request_dropped_by_podman_is_refused(site, podman):
    site.add("podman-gpu", {"host": podman.url, "gpus": "all"})
    began = time.monotonic()
    with pytest.raises(KernelStartError, match="ignored the GPU request"):
        await start("dss-podman-gpu")
    assert time.monotonic() - began < 5


def tiny_image(client, ref: str) -> None:
    """A one-file image of ours (2 MiB, so several chunks stream), imported from a tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        payload = os.urandom(2 * 2**20)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    repository, tag = ref.rsplit(":", 1)
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)


def test_transfer_reports_progress_and_skips_present_images(podman, site):
    """The registry-less path: an image streamed from dockerd into another daemon."""
    local = docker_client(DockerSettings())
    target = docker_client(DockerSettings(host=podman.url), timeout=600)
    small = f"dss-containers/transfer-test:{os.getpid()}"
    tiny_image(local, small)
    seen: list[int] = []
    try:
        if images.image_exists(target, small):
            target.images.remove(small)
        result = transfer.transfer_image(
            small, local, target, lambda sent, total: seen.append(sent)
        )
        assert result.copied and result.bytes_sent > 0
        assert seen == sorted(seen) and seen[-1] == result.bytes_sent
        assert images.image_exists(target, small)
        again = transfer.transfer_image(small, local, target)
        assert not again.copied  # present: nothing sent
        with pytest.raises(BackendError, match="not on the source daemon"):
            transfer.transfer_image("dss-containers/no-such:1", local, target)

        # the same through the CLI, for a config whose image is missing on its daemon
        target.images.remove(small)
        site.configs["podman-tiny"] = {
            "backend": "docker",
            "image": small,
            "docker": {"host": podman.url},
        }
        site.add("docker")  # rewrites the file
        cli = [sys.executable, "-c", "from jupyter_dss_containers.cli import main; main()"]
        copied = subprocess.run(
            [*cli, "copy-image", "podman-tiny", "--config", str(site.path)],
            capture_output=True,
            text=True,
        )
        assert copied.returncode == 0, copied.stderr
        assert f"copied {small} to {podman.url}" in copied.stdout
        assert "sent" in copied.stderr  # the progress lines
        assert images.image_exists(target, small)
    finally:
        for client in (local, target):
            if images.image_exists(client, small):
                client.images.remove(small)


async def test_a_remote_daemon_publishing_on_its_own_loopback_is_refused(site):
    """Ports on a remote host's 127.0.0.1 are out of this server's reach: say so at once.

    The host name is in the reserved ``.invalid`` domain: nothing is dialled.
    """
    site.add("far-away", {"host": "ssh://root@gpu-host.invalid"})
    began = time.monotonic()
    with pytest.raises(KernelStartError, match=r"set docker\.bind_address") as failed:
        await start("dss-far-away")
    assert time.monotonic() - began < 5
    assert "ssh://root@gpu-host.invalid" in str(failed.value)


async def test_an_unknown_ssh_host_key_is_refused(site, sshd):
    """``localhost`` is not in known_hosts (only ``[127.0.0.1]:port`` is): no trust on first use."""
    site.add("ssh-unknown-host", {"host": f"ssh://root@localhost:{sshd.port}"})
    config = load_config(site.path).get("ssh-unknown-host")
    began = time.monotonic()
    with pytest.raises(BackendError, match="SSH host key unknown") as failed:
        await backend_for(config).check()
    assert time.monotonic() - began < 5
    assert f"ssh://root@localhost:{sshd.port}" in str(failed.value)


@pytest.mark.parametrize("scheme", ["tcp", "ssh"])
async def test_a_silent_daemon_fails_fast_not_after_the_sdk_timeout(site, scheme):
    """A host that drops connections (a firewall) is reported in seconds, over TCP and SSH."""
    silent = SilentListener()
    try:
        url = f"{scheme}://{'root@' if scheme == 'ssh' else ''}127.0.0.1:{silent.port}"
        site.add(f"silent-{scheme}", {"host": url})
        began = time.monotonic()
        with pytest.raises(KernelStartError, match="connection timed out") as failed:
            await start(f"dss-silent-{scheme}")
        assert time.monotonic() - began < 15  # seconds, not the SDK's 60 s timeout (a loaded host)
        assert url in str(failed.value)
    finally:
        silent.close()


# --------------------------------------------------------------------------- Podman: jobs, builds


@pytest.fixture(scope="module")
def podman_site(workspace, podman) -> Path:
    """A config file whose one execution config (and its code env) lives on Podman."""
    path = workspace / "podman-jobs.yaml"
    config = {"backend": "docker", "image": "default", "docker": {"host": podman.url}}
    data = {
        "code_envs": {"tiny": {"packages": ["six==1.16.0"], "available_for": "all"}},
        "execution_configs": {"podman-jobs": {**config, "permissions": {"groups": ["*"]}}},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def podman_client(podman: PodmanService):
    return docker_client(DockerSettings(host=podman.url), timeout=600)


def job_containers(podman: PodmanService) -> list:
    labels = [f"{ownership.MANAGED}=true", f"{ownership.KIND}=job"]
    return podman_client(podman).containers.list(all=True, filters={"label": labels})


def drop(client, *refs: str) -> None:
    for ref in refs:
        if images.image_exists(client, ref):
            client.images.remove(ref, force=True)


async def test_podman_runs_a_job_to_completion_and_returns_its_result(podman_site, podman):
    service = JobService(config_file=str(podman_site))
    code = (
        "import os, socket\n"
        "print(socket.gethostname(), os.getuid(), os.environ.get('container'))\n"
        "y = x * 2"
    )
    request = JobRequest(
        config="podman-jobs", kind="python", code=code, inputs={"x": 21}, outputs=("y",)
    )
    began = time.monotonic()
    job = await service.submit(request)
    await service.wait(job.id)
    print(f"\njob on Podman: {time.monotonic() - began:.1f} s")
    assert job.state == "succeeded", job.message
    assert (await python_result(service, job.id))["outputs"] == {"y": 42}
    hostname, uid, container = "".join(t for s, t in job.output if s == "stdout").split()
    assert hostname == job.workload_id[:12] and container == "podman"  # Podman's container
    assert uid != "0"

    # an error in the job comes back with its traceback (read from the stopped container)
    failing = await service.submit(
        JobRequest(config="podman-jobs", kind="python", code="raise ValueError('no podman')")
    )
    await service.wait(failing.id)
    with pytest.raises(RemoteError, match="no podman") as raised:
        await service.result(failing.id)
    assert "ValueError" in str(raised.value)
    assert job_containers(podman) == []  # both removed


def test_podman_builds_a_from_image_through_its_docker_api(podman, base_image):
    client = podman_client(podman)
    spec = BaseImageSpec(
        name="podman-from", from_image=base_image, dockerfile_append="RUN echo hi > /etc/dss-podman"
    )
    tag, friendly = images.base_image_tag(spec), images.friendly_tag(spec)
    drop(client, tag, friendly)
    events: list[images.BuildEvent] = []
    try:
        began = time.monotonic()
        assert images.build_base_image(spec, client, progress=events.append) == tag
        print(f"\nfrom: build on Podman: {time.monotonic() - began:.1f} s")
        out = client.containers.run(tag, ["sh", "-c", "cat /etc/dss-podman; id -u"], remove=True)
        assert out.decode() == "hi\n1000\n"
        assert client.images.get(tag).labels[images.LABEL_BASE_IMAGE] == "podman-from"
        assert images.image_exists(client, friendly)
        assert not images.image_exists(docker_client(DockerSettings()), tag)  # Podman's own
        # Podman's "STEP 3/11:" lines move the progress as Docker's "Step 3/11 :" do
        steps = [e.progress for e in events if e.step == "build" and e.progress]
        assert steps and steps == sorted(steps) and steps[-1] > 0.5
        assert images.build_base_image(spec, client, progress=events.append) == tag
        assert events[-1].step == "cached"
    finally:
        drop(client, tag, friendly)


def test_podman_imports_a_root_fs_with_the_image_settings(podman, workspace):
    """The bootstrap's import step (``images/create?fromSrc=-`` with ``changes``), on a
    one-file root file system instead of mmdebstrap's."""
    client = podman_client(podman)
    tarball = workspace / "tiny-rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("etc/dss-rootfs")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    spec = BaseImageSpec(name="podman-import", bootstrap="debian")
    ref = f"dss-containers/rootfs-podman-test:{os.getpid()}"
    try:
        images.import_rootfs(client, images.BuildRun(spec.name, None), tarball, ref, spec)
        config = client.api.inspect_image(ref)["Config"]
        assert f"PATH={images.IMAGE_PATH}" in config["Env"] and "LANG=C.UTF-8" in config["Env"]
        assert config["User"] == images.IMAGE_USER and config["WorkingDir"] == images.IMAGE_HOME
        assert config["Labels"][images.LABEL_WITH_R] == "false"
        assert config["Labels"][images.LABEL_ROOTFS] == str(os.getpid())
    finally:
        drop(client, ref)


async def test_podman_builds_a_code_env_image_and_runs_a_job_in_it(podman_site, podman, base_image):
    client = podman_client(podman)
    config_file = load_config(podman_site)
    tag = images.resolve_image(config_file, config_file.get("podman-jobs"), "tiny")
    drop(client, tag)
    try:
        began = time.monotonic()
        build = await asyncio.to_thread(
            codeenv.build_env_image, config_file, "tiny", "podman-jobs", client
        )
        print(f"\ncode env on Podman: {time.monotonic() - began:.1f} s")
        assert build.built and build.tag == tag
        labels = client.images.get(tag).labels
        assert labels[LABEL_CODE_ENV] == "tiny" and labels[LABEL_EXEC_CONFIG] == "podman-jobs"
        states = inventory.image_states(config_file, client)  # Podman's docker.io/... tags
        assert [s.state for s in states if s.ref == tag] == ["built"]
        assert [s.state for s in states if s.ref == base_image] == ["built"]

        service = JobService(config_file=str(podman_site))
        code = "import six\nv = six.__version__"
        request = JobRequest(
            config="podman-jobs", kind="python", code=code, outputs=("v",), code_env="tiny"
        )
        job = await service.submit(request)
        await service.wait(job.id)
        assert job.image == tag
        assert (await python_result(service, job.id))["outputs"] == {"v": "1.16.0"}
        again = codeenv.build_env_image(config_file, "tiny", "podman-jobs", client)
        assert not again.built
    finally:
        drop(client, tag)
