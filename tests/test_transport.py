"""Kernel traffic private by default, network only where needed, bounded kernels and
transactional starts, on the real engine and a real Jupyter server.

Nothing here sends traffic to a bridge address: the proofs are what the kernel's own
container says (``/proc/net/tcp*``, ``/proc/net/route``), what the daemon applied
(``docker inspect``), and what a subscriber on 127.0.0.1 or a Unix socket gets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import socket
import uuid
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
from conftest import leftover_containers, need
from jupyter_client import AsyncKernelManager
from kernels import CGROUP_PROBE, config_in_use, run, start, stop
from servers import ServerProcess

from jupyter_dss_containers import ownership, transport
from jupyter_dss_containers.backends.docker.network import ICC_OPTION, ISOLATED_NETWORK
from jupyter_dss_containers.config import (
    DEFAULT_MEMORY,
    DEFAULT_PIDS,
    ConfigError,
    load_config,
    parse_config,
)
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager
from jupyter_dss_containers.provisioner import KernelStartError

pytestmark = pytest.mark.docker

CONFIG = """
execution_configs:
  ipc:
    backend: docker
    image: default
    permissions: {groups: ["*"]}
  tcp:
    backend: docker
    image: default
    transport: tcp
    permissions: {groups: ["*"]}
  offline:
    backend: docker
    image: default
    docker: {network: none}
    permissions: {groups: ["*"]}
"""
KINDS = ["ipc", "tcp"]

#: (address, port) of every listening TCP socket in the container's network namespace
LISTEN_PROBE = """
import ipaddress, json
found = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for row in open(table).read().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "0A":  # TCP_LISTEN
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append([str(ipaddress.ip_address(raw)), int(hex_port, 16)])
print(json.dumps(sorted(found)))
"""
#: whether the container has a default route (outbound traffic possible), without any traffic
ROUTE_PROBE = """
rows = open("/proc/net/route").read().splitlines()[1:]
print("default-route" if any(r.split()[1] == "00000000" for r in rows) else "no-route")
"""
#: starts threads until the kernel's cgroup refuses one (threads count against pids)
THREAD_BOMB = """
import threading
stop, started = threading.Event(), 0
try:
    while started < 4 * {limit}:
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
    print("unbounded", started)
except RuntimeError:
    print("refused-after", started)
finally:
    stop.set()
"""
#: cgroup v1 or v2: the pids limit the kernel lives under
PIDS_PROBE = """
import os
for p in ("/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/pids.max"):
    if os.path.exists(p):
        print(open(p).read().strip())
        break
"""


@pytest.fixture(scope="module")
def transport_config(workspace, base_image):
    with config_in_use(workspace / "transport.yaml", CONFIG) as config_file:
        yield config_file


def container_of(docker_client, km):
    return docker_client.containers.get(km.provisioner.workload_id)


def exists(path: str | Path) -> bool:
    return os.path.exists(path)


def kernel_folders() -> set[Path]:
    """Every kernel folder in this process's runtime folder."""
    from jupyter_core.paths import jupyter_runtime_dir

    return set((Path(jupyter_runtime_dir()) / transport.PARENT_NAME).glob("*/*"))


# --------------------------------------------------------------------------- private traffic


@pytest.mark.parametrize("kind", KINDS)
async def test_an_ipc_kernel_listens_on_no_tcp_port(transport_config, kind):
    """Guards against a kernel on ipc that still binds TCP ports (the transport not reaching
    the kernel's connection file). What may listen on the container's own loopback, which
    nothing outside its network namespace reaches, is ipykernel's pipe for the output of
    forked subprocesses (127.0.0.1) and the daemon's DNS resolver (127.0.0.11)."""
    km, kc = await start(f"dss-{kind}")
    try:
        _, printed = await run(kc, LISTEN_PROBE)
        listening = [tuple(row) for row in json.loads(printed)]
        outside = sorted(p for ip, p in listening if not ipaddress.ip_address(ip).is_loopback)
        inside = {ip for ip, _ in listening if ipaddress.ip_address(ip).is_loopback}
        assert inside <= {"127.0.0.1", "127.0.0.11"}, listening
        if kind == "ipc":
            assert outside == [], f"an ipc kernel listens on TCP ports {outside}"
        else:
            assert outside == list(range(41000, 41005))  # the kernel's five, nothing else
    finally:
        await stop(km, kc)


@pytest.mark.parametrize("kind", KINDS)
async def test_kernel_containers_accept_no_traffic_from_other_containers(
    transport_config, docker_client, kind
):
    """Guards against kernels on the daemon's default bridge, where every container reaches
    every other: they join a bridge with inter-container traffic off (the daemon's own
    setting, read back), and keep a route out."""
    km, kc = await start(f"dss-{kind}")
    try:
        attrs = container_of(docker_client, km).attrs
        assert attrs["HostConfig"]["NetworkMode"] == ISOLATED_NETWORK
        assert list(attrs["NetworkSettings"]["Networks"]) == [ISOLATED_NETWORK]
        network = docker_client.api.inspect_network(ISOLATED_NETWORK)
        assert network["Driver"] == "bridge"
        assert network["Options"].get(ICC_OPTION) == "false"
        assert (await run(kc, ROUTE_PROBE))[1].strip() == "default-route"
    finally:
        await stop(km, kc)


async def test_network_none_is_honoured_and_an_ipc_kernel_runs_there(
    transport_config, docker_client
):
    """Guards against the isolated network overriding a config's own ``network``."""
    km, kc = await start("dss-offline")
    try:
        assert km.transport == "ipc"
        attrs = container_of(docker_client, km).attrs
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert (await run(kc, ROUTE_PROBE))[1].strip() == "no-route"
        assert (await run(kc, "print(6 * 7)"))[1].strip() == "42"
    finally:
        await stop(km, kc)


async def test_a_subscriber_without_the_curve_key_reads_nothing_from_a_tcp_kernel(
    transport_config,
):
    """Guards against TCP kernels without CurveZMQ: iopub is a PUB socket that needs no HMAC
    key, so a subscriber on 127.0.0.1 would read every output. One with the key does read
    them, in the same window: the thief was connected while the secret went by."""
    km, kc = await start("dss-tcp")
    info = km.get_connection_info()
    assert info.get("curve_publickey"), "CurveZMQ is off on a tcp kernel"
    context = zmq.asyncio.Context()
    thief = context.socket(zmq.SUB)
    keyed = context.socket(zmq.SUB)
    try:
        for sock in (thief, keyed):
            sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.linger = 0
        keyed.curve_publickey = km.curve_publickey
        keyed.curve_secretkey = km.curve_secretkey
        keyed.curve_serverkey = km.curve_publickey
        url = f"tcp://127.0.0.1:{info['iopub_port']}"
        thief.connect(url)
        keyed.connect(url)
        secret = f"secret-{secrets.token_hex(8)}".encode()
        seen = False
        for _ in range(20):  # until the keyed subscriber is joined and sees it
            await run(kc, f"print({secret.decode()!r})")
            while await keyed.poll(500):
                frames = await keyed.recv_multipart()
                seen = seen or any(secret in frame for frame in frames)
            if seen:
                break
        assert seen, "the subscriber with the key saw nothing: the check proves nothing"
        stolen = []
        while await thief.poll(200):
            stolen.append(await thief.recv_multipart())
        assert stolen == [], "a subscriber without the key read the kernel's iopub"
    finally:
        thief.close()
        keyed.close()
        context.term()
        await stop(km, kc)


def _dial_as(uid: int | None, path: str) -> int:
    """Connect to a Unix socket in a child process (as ``uid`` when given): 0 when it
    connected, 13 when refused (EACCES), 1 otherwise."""
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        code = 1
        try:
            if uid is not None:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
            code = 0
        except PermissionError:
            code = 13
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


async def test_no_other_local_user_can_dial_an_ipc_kernel(transport_config, docker_client):
    """Guards against a socket folder others can reach: another host user, even one with
    the container user's uid (1000), is refused at the private parent; the server's user
    connects (which shows the socket is there)."""
    if os.geteuid() != 0:
        need("needs root to act as other users")
    km, kc = await start("dss-ipc")
    try:
        shell = f"{km.ip}-{km.shell_port}"
        uid = int(container_of(docker_client, km).attrs["Config"]["User"].split(":")[0])
        assert await asyncio.to_thread(_dial_as, None, shell) == 0
        assert await asyncio.to_thread(_dial_as, 65534, shell) == 13
        assert await asyncio.to_thread(_dial_as, uid, shell) == 13
    finally:
        await stop(km, kc)


# --------------------------------------------------------------------------- bounded kernels


async def test_a_kernel_on_the_embedded_default_cannot_fork_past_its_pids_limit(
    docker_client, base_image, monkeypatch
):
    """Guards against configs without limits (the embedded ``local`` one): a fork bomb or a
    runaway allocation in one kernel would take the host's PID table or memory."""
    monkeypatch.delenv("DSS_CONTAINERS_CONFIG", raising=False)  # no file: the embedded one
    assert load_config().get("local").docker.pids == DEFAULT_PIDS
    km, kc = await start("dss-local", kernel_spec_manager=ContainerKernelSpecManager())
    try:
        host = container_of(docker_client, km).attrs["HostConfig"]
        assert host["PidsLimit"] == DEFAULT_PIDS and host["Memory"] == DEFAULT_MEMORY
        assert (await run(kc, PIDS_PROBE))[1].strip() == str(DEFAULT_PIDS)
        _, memory, _ = (await run(kc, CGROUP_PROBE))[1].split()[:3]
        assert int(memory) == DEFAULT_MEMORY
        reply, printed = await run(kc, THREAD_BOMB.format(limit=DEFAULT_PIDS), timeout=120)
        outcome, started = printed.split()
        assert outcome == "refused-after", printed
        assert 0 < int(started) < DEFAULT_PIDS
        assert (await run(kc, "print('still alive')"))[1].strip() == "still alive"
    finally:
        await stop(km, kc)


def test_default_limits_come_from_the_file_and_a_config_keeps_its_own(tmp_path):
    path = tmp_path / "limits.yaml"
    path.write_text(
        "defaults: {resources: {memory: 2g, pids: 300}}\n"
        "execution_configs:\n"
        "  plain: {backend: docker, image: default}\n"
        "  own: {backend: docker, image: default, docker: {resources: {memory: 256m}}}\n"
    )
    config_file = load_config(path)
    assert (config_file.get("plain").docker.memory, config_file.get("plain").docker.pids) == (
        2 * 1024**3,
        300,
    )
    assert (config_file.get("own").docker.memory, config_file.get("own").docker.pids) == (
        256 * 1024**2,
        300,
    )


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("fragment", "where", "says"),
    [
        ("transport: udp", "execution_configs.x.transport", "expected one of"),
        (
            "transport: ipc\n    docker: {host: 'tcp://10.0.0.1:2376'}",
            "execution_configs.x.transport",
            "ipc sockets need a Docker or Podman daemon on this host",
        ),
        (
            "transport: tcp\n    docker: {network: none}",
            "execution_configs.x.transport",
            "cannot be reached",
        ),
    ],
)
def test_a_transport_that_cannot_work_is_refused_with_the_place(tmp_path, fragment, where, says):
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"execution_configs:\n  x:\n    backend: docker\n    image: default\n    {fragment}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (line,) = str(caught.value).splitlines()
    assert f"{path}: {where}: " in line and says in line, line


def test_ipc_on_kubernetes_is_refused_and_auto_means_tcp_there():
    with pytest.raises(ConfigError, match="runs on Kubernetes"):
        parse_config(
            {
                "execution_configs": {
                    "k": {"backend": "kubernetes", "image": "default", "transport": "ipc"}
                }
            },
            "inline",
        )
    config_file = parse_config(
        {
            "execution_configs": {
                "k": {"backend": "kubernetes", "image": "default"},
                "remote": {
                    "backend": "docker",
                    "image": "default",
                    "docker": {"host": "ssh://u@h"},
                },
                "here": {"backend": "docker", "image": "default"},
            }
        },
        "inline",
    )
    assert [transport.resolve(config_file.get(n)) for n in ("k", "remote", "here")] == [
        "tcp",
        "tcp",
        "ipc",
    ]


# --------------------------------------------------------------------------- transactional


SERVER_CONFIG = """
execution_configs:
  transactional:
    backend: docker
    image: default
    permissions: {groups: ["*"]}
"""


@pytest.fixture
def server(tmp_path, base_image):
    config_path = tmp_path / "dss.yaml"
    config_path.write_text(SERVER_CONFIG)
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(config_path))
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    process = ServerProcess(tmp_path / "server", env).start()
    yield process
    process.stop()


def test_a_malformed_kernel_id_is_refused_before_anything_starts(server, docker_client):
    """Guards against kernel ids that break the start after the container exists (a file
    name too long, a path, a NUL): each answers 400 saying why and leaves no container; a
    well-formed id (the control) starts one."""
    ours = {"config": "transactional"}
    assert leftover_containers(docker_client, **ours) == []
    for bad in ("a" * 300, "../../../tmp/evil", "ab\x00cd-0000-0000-0000-000000000000"):
        status, body = server.request(
            "POST", "api/kernels", {"name": "dss-transactional", "kernel_id": bad}, timeout=60
        )
        assert status == 400, (bad[:20], status, body)
        assert "is not a UUID" in body["message"] and "Traceback" not in str(body)
        assert leftover_containers(docker_client, **ours) == [], f"{bad[:20]!r} left a container"
    status, listed = server.request("GET", "api/kernels")
    assert status == 200 and listed == []

    kernel_id = str(uuid.uuid4())
    status, body = server.request(
        "POST", "api/kernels", {"name": "dss-transactional", "kernel_id": kernel_id}, timeout=90
    )
    assert status == 201 and body["id"] == kernel_id, (status, body, server.tail())
    assert len(leftover_containers(docker_client, **ours)) == 1
    status, _ = server.request("DELETE", f"api/kernels/{kernel_id}", timeout=60)
    assert status == 204
    assert leftover_containers(docker_client, **ours) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_start_that_fails_once_the_container_exists_removes_it(
    transport_config, docker_client, tmp_path, kind
):
    """Guards against a start that fails after the container was made (here: the server's
    connection file cannot be written) and leaves it running, with its socket folder."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a folder would have to be
    km = AsyncKernelManager(kernel_name=f"dss-{kind}", connection_file=str(blocker / "k.json"))
    before = kernel_folders()
    with pytest.raises(KernelStartError, match="cannot write the kernel's connection file"):
        await km.start_kernel()
    assert leftover_containers(docker_client, kernel_id=km.kernel_id) == []
    assert kernel_folders() == before, "the socket folder was left behind"


# --------------------------------------------------------------------------- folders


def test_folders_of_gone_processes_are_swept_and_nothing_else(tmp_path):
    """Guards against socket folders leaking when a server dies between making a folder and
    its container, and against the sweep touching what is not a kernel folder of a dead
    process: a live process's folder, one a container still uses, a link to elsewhere."""
    ownership.this_process().register()
    live = Path(transport.new_folder())
    parent = live.parent.parent
    gone = parent / "deadbeef"  # a process that is not alive
    dead, in_use, link = gone / ("0" * 32), gone / ("1" * 32), gone / ("a" * 32)
    for folder in (dead, in_use):
        folder.mkdir(parents=True, mode=0o700)
        (folder / "k-1").write_text("")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    link.symlink_to(victim)
    removed = transport.sweep({str(in_use)}, {ownership.this_process().server_id})
    assert removed == [str(dead)]
    assert not exists(dead) and exists(in_use) and exists(live)
    assert (victim / "keep.txt").read_text() == "mine"
    transport.remove_folder(str(link))  # a link: left alone
    assert (victim / "keep.txt").read_text() == "mine"
    for folder in (live, in_use):
        transport.remove_folder(str(folder))
        assert not exists(folder)
    link.unlink()


def test_a_link_planted_in_a_reused_folder_is_not_written_through(tmp_path):
    """Guards against the kernel (which owns its folder) planting ``connection.json`` as a
    link to a host file before a restart, for the server to overwrite as root."""
    folder = transport.new_folder()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    os.symlink(victim, os.path.join(folder, "connection.json"))
    user = f"{os.geteuid()}:{os.getegid()}"
    transport.prepare_folder(folder, user, {"connection.json": b'{"fresh": true}'})
    assert victim.read_text() == "mine"
    path = Path(folder, "connection.json")
    assert not path.is_symlink() and path.read_text() == '{"fresh": true}'
    assert path.stat().st_mode & 0o777 == 0o600
    transport.remove_folder(folder)
