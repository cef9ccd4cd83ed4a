"""What it takes to run one kernel in a workload: its connection file in, its address out.

Shared by the provisioner (a kernel for a user) and the warm pool (a kernel for nobody
yet), so both deliver connection info the same way: a private file written into the
workload before it starts, never an environment variable or a label.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend, BackendError
from .backends.base import WorkloadSpec
from .config import ExecutionConfig

CONNECTION_FILE = "/tmp/.dss-kernel/connection.json"
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


@dataclass
class LaunchedKernel:
    workload_id: str
    name: str
    connection_info: dict[str, Any]
    host_ports: dict[int, int]


class LaunchError(BackendError):
    """The workload was created but never became reachable; it has been removed."""


def uses_host_network(config: ExecutionConfig) -> bool:
    return config.backend == "docker" and config.docker.network == "host"


async def launch_kernel_workload(backend: Backend, launch: KernelLaunch) -> LaunchedKernel:
    """Create the workload with its connection file and return how to reach the kernel."""
    ports = tuple(launch.first_container_port + i for i in range(len(PORT_NAMES)))
    host_network = uses_host_network(launch.config)
    if host_network:  # the container's ports are the host's: pick free ones here
        ports = await asyncio.to_thread(_free_local_ports, len(PORT_NAMES))
    in_container = {
        "transport": "tcp",
        "ip": "127.0.0.1" if host_network else "0.0.0.0",  # inside the container
        "key": launch.key.decode(),
        "signature_scheme": launch.signature_scheme,
        "kernel_name": launch.kernel_name,
        **dict(zip(PORT_NAMES, ports, strict=True)),
        **launch.curve,
    }
    spec = WorkloadSpec(
        name=launch.name,
        image=launch.image,
        command=[a.replace("{connection_file}", CONNECTION_FILE) for a in launch.command],
        labels=launch.labels,
        env=launch.env,
        files={CONNECTION_FILE: json.dumps(in_container).encode()},
        ports=ports,
        host_ports=launch.host_ports,
    )
    workload = await backend.create(spec)
    try:
        address, published = await backend.endpoints(workload.id, ports)
    except BackendError as exc:
        status = await backend.status(workload.id)
        tail = await backend.logs(workload.id, tail=20)
        await backend.remove(workload.id)
        detail = f"{status.reason or status.state}" + (f"; last log lines:\n{tail}" if tail else "")
        raise LaunchError(f"{exc} ({detail})") from None
    connection_info = {
        "transport": "tcp",
        "ip": address,
        "key": launch.key,
        "signature_scheme": launch.signature_scheme,
        **{name: published[p] for name, p in zip(PORT_NAMES, ports, strict=True)},
        **launch.curve,
    }
    return LaunchedKernel(workload.id, workload.name, connection_info, published)


def _free_local_ports(count: int) -> tuple[int, ...]:
    from jupyter_client.localinterfaces import localhost
    from jupyter_client.provisioning.local_provisioner import LocalPortCache

    cache = LocalPortCache.instance()
    return tuple(cache.find_available_port(localhost()) for _ in range(count))
