"""What it takes to run one kernel in a workload: its connection file in, its address out.

Shared by the provisioner (a kernel for a user) and the warm pool (a kernel for nobody
yet), so both deliver connection info the same way: a private file, never an environment
variable or a label. On a local daemon the file and the kernel's sockets live in the
kernel's private folder (see :mod:`.transport`); elsewhere the file is copied into the
workload before it starts and the kernel listens on TCP. A launch that fails leaves nothing
behind: no workload, no folder.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from . import transport
from .backends import Backend, BackendError
from .backends.base import WorkloadSpec
from .config import ExecutionConfig
from .imagecontract import KERNEL_RW_FOLDER
from .workspace import WorkspacePlan

CONNECTION_FILE = f"{transport.KERNEL_FOLDER}/connection.json"
#: where a kernel whose files arrive read-only reads a private copy of its connection file
WRITABLE_CONNECTION_FILE = f"{KERNEL_RW_FOLDER}/connection.json"
_COPY_THEN_EXEC = (
    f"umask 077 && mkdir -p {KERNEL_RW_FOLDER} && "
    f'cp {CONNECTION_FILE} {WRITABLE_CONNECTION_FILE} && exec "$@"'
)
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
FIRST_CONTAINER_PORT = 41000


@dataclass
class KernelLaunch:
    """One kernel to start: where, from what, and with which key."""

    config: ExecutionConfig
    image: str
    command: list[str]
    name: str
    labels: dict[str, str]
    key: bytes
    signature_scheme: str = "hmac-sha256"
    env: dict[str, str] = field(default_factory=dict)
    kernel_name: str = ""
    #: CurveZMQ keys, when the kernel manager encrypts the transport
    curve: dict[str, str] = field(default_factory=dict)
    #: host ports to reuse (a restarted kernel keeps its address)
    host_ports: dict[int, int] = field(default_factory=dict)
    first_container_port: int = FIRST_CONTAINER_PORT
    #: the kernel's folder to reuse (a restarted kernel keeps its socket paths)
    folder: str | None = None
    #: the user's files the kernel sees, and where it starts
    workspace: WorkspacePlan | None = None
    #: seconds the backend may wait for the workload to run (None: the backend's default)
    start_timeout: float | None = None


@dataclass
class LaunchedKernel:
    workload_id: str
    name: str
    connection_info: dict[str, Any]
    host_ports: dict[int, int]
    #: the kernel's private folder on the host (local daemons), removed with the kernel
    folder: str | None = None


class LaunchError(BackendError):
    """The workload was created but never became reachable; it has been removed."""


def uses_host_network(config: ExecutionConfig) -> bool:
    return config.backend == "docker" and config.docker.network == "host"


def plan_launch(
    launch: KernelLaunch,
    kind: str,
    folder: str | None,
    ports: tuple[int, ...],
    read_only_files: bool = False,
) -> tuple[WorkloadSpec, dict[str, Any]]:
    """The workload to create and the connection info the server will use (pure).

    ``kind`` is ``ipc`` or ``tcp``; ``folder`` the kernel's host folder (local daemons);
    ``ports`` the kernel's ports inside the workload (tcp). With CurveZMQ keys, ipykernel
    rewrites its connection file at start (it compares its keys, bytes, with the file's,
    text): where files arrive read-only the kernel starts from a private copy.
    """
    if kind == "ipc":
        ip_inside = transport.ipc_ip(transport.KERNEL_FOLDER)
        ip_outside = transport.ipc_ip(folder or "")
        channel_ports, ports = transport.IPC_PORTS, ()
    else:
        ip_inside = "127.0.0.1" if uses_host_network(launch.config) else "0.0.0.0"
        ip_outside, channel_ports = "", ports
    in_container = {
        "transport": kind,
        "ip": ip_inside,
        "key": launch.key.decode(),
        "signature_scheme": launch.signature_scheme,
        "kernel_name": launch.kernel_name,
        **dict(zip(PORT_NAMES, channel_ports, strict=True)),
        **launch.curve,
    }
    labels = dict(launch.labels)
    if folder:
        labels[transport.FOLDER_LABEL] = folder
    command = [a.replace("{connection_file}", CONNECTION_FILE) for a in launch.command]
    if read_only_files and launch.curve:
        command = ["/bin/sh", "-c", _COPY_THEN_EXEC, "dss-kernel"] + [
            a.replace("{connection_file}", WRITABLE_CONNECTION_FILE) for a in launch.command
        ]
    spec = WorkloadSpec(
        name=launch.name,
        image=launch.image,
        command=command,
        labels=labels,
        env=launch.env,
        files={CONNECTION_FILE: json.dumps(in_container).encode()},
        ports=ports,
        host_ports=launch.host_ports,
        host_folder=folder,
        host_folder_target=transport.KERNEL_FOLDER,
        workspace=launch.workspace,
        start_timeout=launch.start_timeout,
    )
    outside = {
        "transport": kind,
        "ip": ip_outside,
        "key": launch.key,
        "signature_scheme": launch.signature_scheme,
        **dict(zip(PORT_NAMES, channel_ports, strict=True)),
        **launch.curve,
    }
    return spec, outside


async def launch_kernel_workload(backend: Backend, launch: KernelLaunch) -> LaunchedKernel:
    """Create the workload with its connection file and return how to reach the kernel."""
    kind = transport.resolve(launch.config)
    local = transport.is_local_daemon(launch.config)
    if kind == "ipc" and not local:
        raise BackendError(
            f"execution config {launch.config.name!r}: transport ipc needs a Docker or Podman "
            "daemon on this host (a unix:// socket); use transport: tcp for this daemon"
        )
    ports: tuple[int, ...] = ()
    if kind == "tcp":
        ports = tuple(launch.first_container_port + i for i in range(len(PORT_NAMES)))
        if uses_host_network(launch.config):  # the container's ports are the host's
            ports = await asyncio.to_thread(_free_local_ports, len(PORT_NAMES))
    folder, made_here = launch.folder if local else None, False
    if local and folder is None:
        try:
            folder, made_here = await asyncio.to_thread(transport.new_folder), True
        except OSError as exc:
            raise BackendError(f"execution config {launch.config.name!r}: {exc}") from None
    spec, connection_info = plan_launch(launch, kind, folder, ports, backend.read_only_files)
    try:
        workload = await backend.create(spec)
    except BaseException:
        if made_here:
            await asyncio.to_thread(transport.remove_folder, folder)
        raise
    published: dict[int, int] = {}
    if kind == "tcp":
        try:
            address, published = await backend.endpoints(workload.id, ports)
        except BaseException as exc:
            detail = (
                await _why_unreachable(backend, workload.id)
                if isinstance(exc, BackendError)
                else ""
            )
            await remove_kernel_workload(backend, workload.id, folder if made_here else None)
            if isinstance(exc, BackendError):
                raise LaunchError(f"{exc} ({detail})") from None
            raise
        connection_info["ip"] = address
        connection_info.update(
            {name: published[p] for name, p in zip(PORT_NAMES, ports, strict=True)}
        )
    return LaunchedKernel(workload.id, workload.name, connection_info, published, folder)


async def _why_unreachable(backend: Backend, workload_id: str) -> str:
    """The workload's state and last log lines, as far as the backend still answers."""
    try:
        status = await backend.status(workload_id)
        tail = await backend.logs(workload_id, tail=20)
    except BackendError as exc:
        return f"its state is unknown: {exc}"
    return f"{status.reason or status.state}" + (f"; last log lines:\n{tail}" if tail else "")


async def remove_kernel_workload(backend: Backend, workload_id: str, folder: str | None) -> None:
    """Remove a kernel's workload, then its folder (whatever the removal said)."""
    try:
        await backend.remove(workload_id)
    finally:
        if folder:
            await asyncio.to_thread(transport.remove_folder, folder)


def _free_local_ports(count: int) -> tuple[int, ...]:
    from jupyter_client.localinterfaces import localhost
    from jupyter_client.provisioning.local_provisioner import LocalPortCache

    cache = LocalPortCache.instance()
    return tuple(cache.find_available_port(localhost()) for _ in range(count))
