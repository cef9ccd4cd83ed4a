"""The core path, on the real engine: kernels in containers through plain jupyter_client.

The tests whose subject the transport can change run twice: on ipc sockets in the kernel's
private folder (the default on a local daemon) and on TCP with CurveZMQ (``transport: tcp``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time

import docker
import docker.errors
import nbformat
import pytest
from conftest import containers_created, leftover_containers
from jupyter_client import AsyncKernelManager
from kernels import CGROUP_PROBE, config_in_use, kernel_owner_script, run, start, stop

from jupyter_dss_containers import ownership, transport
from jupyter_dss_containers.permissions import PermissionDenied, process_identity
from jupyter_dss_containers.provisioner import KernelStartError, reattach

pytestmark = pytest.mark.docker

CONFIG = """
execution_configs:
  local:
    backend: docker
    image: default
    description: the default image, no limits
    permissions: {groups: ["*"]}
  small:
    backend: docker
    image: default
    description: 256 MiB, half a CPU
    docker: {resources: {memory: 256m, cpus: 0.5, pids: 256}}
    env: {DSS_GREETING: hello}
    permissions: {groups: ["*"]}
  local-tcp:
    backend: docker
    image: default
    transport: tcp
    permissions: {groups: ["*"]}
  msg:
    backend: docker
    image: default
    interrupt_mode: message
    permissions: {groups: ["*"]}
  msg-tcp:
    backend: docker
    image: default
    interrupt_mode: message
    transport: tcp
    permissions: {groups: ["*"]}
  admins-only:
    backend: docker
    image: default
    permissions: {groups: [admins]}
  missing-image:
    backend: docker
    image: dss-containers/no-such-image:1
    permissions: {groups: ["*"]}
  dead-daemon:
    backend: docker
    image: default
    docker: {host: "unix:///tmp/no-docker-here.sock"}
    permissions: {groups: ["*"]}
"""


@pytest.fixture(scope="module")
def kernel_config(workspace, base_image):
    """The test config file, named by $DSS_CONTAINERS_CONFIG, with its kernel specs installed."""
    with config_in_use(workspace / "kernels.yaml", CONFIG) as config_file:
        yield config_file


#: kernel spec suffix per transport: "dss-local" is on ipc (auto, local daemon)
TRANSPORTS = {"ipc": "", "tcp": "-tcp"}


def container_of(docker_client, km):
    return docker_client.containers.get(km.provisioner.workload_id)


def folder_of(km) -> str:
    return km.provisioner._kernel_folder


def exists(path: str) -> bool:
    return os.path.exists(path)


async def test_kernel_runs_in_container_with_config_limits(kernel_config, docker_client):
    km, kc = await start("dss-small")
    container = container_of(docker_client, km)
    probe = CGROUP_PROBE + "print(socket.gethostname(), os.environ['DSS_GREETING'])\n"
    _, printed = await run(kc, probe)
    uid, memory, quota, hostname, greeting = printed.split()
    assert hostname == container.id[:12]
    assert uid != "0"
    assert int(memory) == 256 * 1024**2
    assert int(quota) == 50000  # 0.5 CPU of a 100 ms period
    assert greeting == "hello"
    await stop(km, kc)
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)
    assert not leftover_containers(docker_client, kernel_id=km.kernel_id)


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("mode", ["signal", "message"])
async def test_interrupt_stops_a_long_sleep(kernel_config, mode, kind):
    kernel_name = ("dss-msg" if mode == "message" else "dss-local") + TRANSPORTS[kind]
    km, kc = await start(kernel_name)
    assert km.transport == kind
    assert km.kernel_spec.interrupt_mode == mode
    running = asyncio.ensure_future(run(kc, "import time; time.sleep(60)", timeout=60))
    await asyncio.sleep(1.0)  # the sleep has begun
    sent = time.perf_counter()
    await km.interrupt_kernel()
    reply, printed = await asyncio.wait_for(running, timeout=5)
    elapsed = time.perf_counter() - sent
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    assert elapsed < 1.0, f"interrupt took {elapsed:.2f}s"
    # the kernel survives an interrupt
    assert (await run(kc, "print(1 + 1)"))[1].strip() == "2"
    await stop(km, kc)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_restart_gives_fresh_namespace_and_new_container(kernel_config, docker_client, kind):
    """A restart is a new container behind the same address (the same socket paths on ipc,
    the same host ports on tcp), so connected clients carry on; shutdown removes it all."""
    km, kc = await start("dss-local" + TRANSPORTS[kind])
    await run(kc, "x = 42")
    first, address = km.provisioner.workload_id, km.get_connection_info()
    await km.restart_kernel(now=False)
    await kc.wait_for_ready(timeout=60)
    reply, printed = await run(kc, "print('x' in globals())")
    assert printed.strip() == "False"
    assert km.provisioner.workload_id != first
    again = km.get_connection_info()
    assert [again[k] for k in ("transport", "ip", "shell_port", "iopub_port")] == [
        address[k] for k in ("transport", "ip", "shell_port", "iopub_port")
    ]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(first)
    assert len(leftover_containers(docker_client, kernel_id=km.kernel_id)) == 1
    folder = folder_of(km)
    assert folder and exists(folder)  # on tcp it holds the connection file only
    await stop(km, kc)
    assert not leftover_containers(docker_client, kernel_id=km.kernel_id)
    assert not exists(folder), "the kernel's folder outlived it"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_container_killed_from_outside_is_reported_dead(kernel_config, docker_client, kind):
    km, kc = await start("dss-local" + TRANSPORTS[kind])
    container_of(docker_client, km).kill()
    deadline = time.monotonic() + 5
    while await km.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not await km.is_alive()
    assert "code 137" in km.provisioner.exit_reason
    assert "SIGKILL" in km.provisioner.exit_reason
    kc.stop_channels()
    await km.shutdown_kernel(now=True)
    assert not leftover_containers(docker_client, kernel_id=km.kernel_id)


async def test_memory_hungry_cell_reports_oom_and_the_limit(kernel_config, docker_client):
    km, kc = await start("dss-small")
    with pytest.raises((TimeoutError, asyncio.TimeoutError, RuntimeError)):
        # 600 MB of touched memory under a 256 MiB limit: the OOM killer ends the kernel
        await run(kc, "b = bytearray(600 * 1024 * 1024)", timeout=10)
    deadline = time.monotonic() + 5
    while await km.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    reason = km.provisioner.exit_reason
    assert "OOM-killed" in reason and "256 MiB" in reason, reason
    kc.stop_channels()
    await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_reattach_after_server_restart(kernel_config, docker_client, monkeypatch, kind):
    name = "dss-local" + TRANSPORTS[kind]
    km, kc = await start(name)
    await run(kc, "survivor = 'still here'")
    info = await km.provisioner.get_provisioner_info()
    json.dumps(info)  # what a server persists must be JSON
    kc.stop_channels()
    # a "new server": a fresh manager built from the persisted info only
    km2 = await reattach(info, name)
    kc2 = km2.client()
    kc2.start_channels()
    await kc2.wait_for_ready(timeout=20)
    assert (await run(kc2, "print(survivor)"))[1].strip() == "still here"
    assert await km2.is_alive()
    # another user, even one permitted on the config, cannot reattach to it
    with monkeypatch.context() as env:
        env.setenv("JUPYTERHUB_USER", "mallory")
        with pytest.raises(PermissionDenied, match="started by another user, not mallory"):
            await reattach(info, name)
    await stop(km2, kc2)
    assert not leftover_containers(docker_client, kernel_id=info["kernel_id"])
    assert not exists(info["kernel_folder"])  # removed by the new manager


async def test_reattach_to_a_stopped_kernel_is_refused_to_another_user_first(
    kernel_config, docker_client, monkeypatch
):
    """A kernel whose container has stopped: another user's reattach gets the same 403 as
    for a running one, quoting none of its log lines, while its owner is told why it died,
    log lines and all. Guards against the owner check done only for running containers
    (the death message would quote another user's output)."""
    km, kc = await start("dss-local")
    secret = "log line of alice 7d2e"
    await run(kc, f"import os; os.write(2, b{secret!r} + b'\\n')")
    info = await km.provisioner.get_provisioner_info()
    kc.stop_channels()
    container = docker_client.containers.get(km.provisioner.workload_id)
    container.kill()
    container.wait(timeout=30)
    assert secret in container.logs().decode()  # there is a log line to leak
    try:
        with monkeypatch.context() as env:
            env.setenv("JUPYTERHUB_USER", "mallory")
            with pytest.raises(PermissionDenied) as refused:
                await reattach(info, "dss-local")
        assert "was started by another user, not mallory" in str(refused.value)
        assert secret not in str(refused.value)
        with pytest.raises(KernelStartError) as dead:  # its owner learns why
            await reattach(info, "dss-local")
        assert "cannot reattach" in str(dead.value) and secret in str(dead.value), dead.value
    finally:
        await km.shutdown_kernel(now=True)
    assert not leftover_containers(docker_client, kernel_id=info["kernel_id"])


def test_unowned_container_is_reaped_by_cleanup(kernel_config, docker_client, workspace):
    """A process that dies (SIGKILL) leaves its kernel container; cleanup reaps it."""
    script = kernel_owner_script(workspace, "dss-local")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    kernel_id = proc.stdout.readline().strip()
    [container] = leftover_containers(docker_client, kernel_id=kernel_id)
    folder = container.labels[transport.FOLDER_LABEL]
    assert os.path.isdir(folder)
    # while its process lives, cleanup leaves it alone
    subprocess.run(["jupyter-dss-containers", "cleanup"], check=True, capture_output=True)
    assert len(leftover_containers(docker_client, kernel_id=kernel_id)) == 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = subprocess.run(
        ["jupyter-dss-containers", "cleanup"], check=True, capture_output=True, text=True
    )
    assert kernel_id in result.stdout
    assert not leftover_containers(docker_client, kernel_id=kernel_id)
    assert not os.path.exists(folder), "the orphan's socket folder was not reaped with it"


def test_nbclient_and_papermill_run_a_notebook_in_a_container(kernel_config, workspace):
    import nbclient
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os; print('uid', os.getuid())"),
        nbformat.v4.new_code_cell("x = 6 * 7\nx"),
    ]
    executed = nbclient.NotebookClient(nb, kernel_name="dss-local", timeout=60).execute()
    assert executed.cells[0].outputs[0]["text"].strip() != "uid 0"
    assert executed.cells[1].outputs[0]["data"]["text/plain"] == "42"

    source = workspace / "in.ipynb"
    nbformat.write(nb, source)
    result = papermill.execute_notebook(
        str(source), str(workspace / "out.ipynb"), kernel_name="dss-local", progress_bar=False
    )
    assert result.cells[1].outputs[0]["data"]["text/plain"] == "42"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_secure_defaults(kernel_config, docker_client, kind):
    """Non-root, no capabilities, no mount but the kernel's own private folder (mode 0700
    on the host, in a private parent), no published port on ipc, ports on 127.0.0.1 only and
    CurveZMQ on tcp, and the key nowhere in the container's record or environment.

    Read from what the engine holds (``docker inspect``) and from inside the kernel: guards
    against a kernel container made privileged, given added capabilities (SYS_ADMIN,
    NET_RAW) or run as root ("0", "0:0", "root": the user is parsed as numbers), each on
    its own (``benchmarks/breakages.py``)."""
    km, kc = await start("dss-local" + TRANSPORTS[kind])
    attrs = container_of(docker_client, km).attrs
    key = km.session.key.decode()
    host_config = attrs["HostConfig"]
    uid, _, gid = attrs["Config"]["User"].partition(":")
    assert uid.isdigit() and gid.isdigit(), attrs["Config"]["User"]  # numbers, never a name
    assert int(uid) != 0 and int(gid) != 0, f"runs as {attrs['Config']['User']}"
    assert host_config["Privileged"] is False, "a privileged kernel container"
    assert not host_config["CapAdd"], f"capabilities added: {host_config['CapAdd']}"
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert not host_config.get("Devices") and host_config.get("PidMode") in ("", None)
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"])
    folder = folder_of(km)
    # no mount but the kernel's folder and the workspace (here the test's working folder,
    # the kernel having no notebook path), the latter at its own path
    mounts = {m["Destination"]: (m["Type"], m["Source"], m["RW"]) for m in attrs["Mounts"]}
    here = os.path.realpath(os.getcwd())  # noqa: ASYNC240 (a test, once)
    assert mounts == {transport.KERNEL_FOLDER: ("bind", folder, True), here: ("bind", here, True)}
    info = os.stat(folder)
    assert info.st_mode & 0o777 == 0o700  # (the kernel's jupyter_client may add the sticky bit)
    assert f"{info.st_uid}:{info.st_gid}" == attrs["Config"]["User"]  # the kernel's user
    for parent in (os.path.dirname(folder), os.path.dirname(os.path.dirname(folder))):
        parent_info = os.stat(parent)
        assert stat.S_IMODE(parent_info.st_mode) == 0o700 and parent_info.st_uid == os.geteuid()
    published = attrs["NetworkSettings"]["Ports"] or {}
    bindings = [b for v in published.values() for b in v or []]
    if kind == "ipc":
        assert km.transport == "ipc" and km.ip == f"{folder}/k"
        assert not host_config.get("PortBindings") and not bindings, "a port was published"
        assert sorted(os.listdir(folder)) == ["connection.json", "k-1", "k-2", "k-3", "k-4", "k-5"]
    else:
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
        assert km.curve_publickey and km.curve_secretkey, "tcp without CurveZMQ"
    for label in (ownership.KERNEL_ID, ownership.CONFIG, ownership.OWNER, ownership.SERVER_ID):
        assert label in attrs["Config"]["Labels"]
    assert key not in json.dumps(attrs), "the HMAC key leaked into docker inspect"
    _, printed = await run(kc, "import os; print(dict(os.environ))")
    assert key not in printed, "the HMAC key leaked into the container's environment"
    # and as the kernel's process sees itself: no capability at all, not uid 0
    _, status = await run(kc, "print(open('/proc/self/status').read())")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    for name in ("CapEff", "CapPrm", "CapBnd"):
        assert int(fields[name], 16) == 0, f"{name} {fields[name].strip()} in the kernel"
    assert all(int(u) != 0 for u in fields["Uid"].split()), f"Uid {fields['Uid'].strip()}"
    await stop(km, kc)


async def test_forbidden_config_is_refused_before_anything_starts(kernel_config, docker_client):
    """Guards the order: the permission check comes before any container is made, as the
    engine's own event log shows (a container started then removed on refusal fails this,
    where "none left afterwards" would pass)."""
    from jupyter_dss_containers.kernelspecs import container_kernel_specs

    assert "dss-admins-only" not in container_kernel_specs(
        kernel_config, process_identity(kernel_config)
    )
    # naming it in a hand-written kernel spec does not get around the check
    km = AsyncKernelManager(kernel_name="dss-local")
    km.kernel_spec.metadata["kernel_provisioner"]["config"]["execution_config"] = "admins-only"
    began = time.time()
    with pytest.raises(PermissionError, match=r"admins-only.*groups admins"):
        await km.start_kernel()
    server_id = ownership.this_process().server_id
    assert containers_created(docker_client, began, config="admins-only", server_id=server_id) == []
    assert not leftover_containers(docker_client, config="admins-only")


async def _start_failure(config_name: str) -> tuple[str, float]:
    km = AsyncKernelManager(kernel_name="dss-local")
    km.kernel_spec.metadata["kernel_provisioner"]["config"]["execution_config"] = config_name
    began = time.perf_counter()
    with pytest.raises(KernelStartError) as caught:
        await km.start_kernel()
    return str(caught.value), time.perf_counter() - began


async def test_missing_image_fails_fast_with_the_image_name(kernel_config):
    message, elapsed = await _start_failure("missing-image")
    assert "dss-containers/no-such-image:1" in message
    assert "is not on the Docker daemon" in message
    assert elapsed < 5


async def test_unreachable_daemon_fails_fast_with_its_address(kernel_config):
    message, elapsed = await _start_failure("dead-daemon")
    assert "unix:///tmp/no-docker-here.sock" in message
    assert "unreachable" in message
    assert elapsed < 5


def test_doctor_checks_every_config(kernel_config):
    """Like DSS's Test button: each config's daemon and image, a dead daemon named fast."""
    began = time.perf_counter()
    result = subprocess.run(
        ["jupyter", "dss-containers", "doctor", "--json", "--config", kernel_config.source],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - began
    assert result.returncode == 1, result.stderr  # two configs are broken on purpose
    rows = {r["config"]: r for r in json.loads(result.stdout)}
    assert rows["local"]["ok"] and rows["local"]["engine"].startswith("docker ")
    assert "present" in rows["local"]["image"]
    assert not rows["dead-daemon"]["ok"]
    assert "unix:///tmp/no-docker-here.sock" in rows["dead-daemon"]["error"]
    assert not rows["missing-image"]["ok"]
    assert "dss-containers/no-such-image:1 missing" in rows["missing-image"]["error"]
    assert elapsed < 30


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_curve_encrypted_transport(kernel_config, kind):
    """jupyter_client's CurveZMQ transport encryption works end to end with our images."""
    km = AsyncKernelManager(
        kernel_name="dss-local" + TRANSPORTS[kind], transport_encryption="required"
    )
    await km.start_kernel()
    info = km.get_connection_info()
    assert info["transport"] == kind
    assert info.get("curve_publickey") and info.get("curve_secretkey")
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    assert (await run(kc, "print(6 * 7)"))[1].strip() == "42"
    await stop(km, kc)
