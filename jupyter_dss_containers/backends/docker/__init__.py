"""The Docker backend: each workload is one container on a Docker (or Docker-API
compatible: Podman) daemon, local or reached over TCP, TLS or SSH, through the docker SDK.

- :mod:`.client`: the cached SDK client per daemon, calls in threads, errors in words;
- :mod:`.containers`: pure builders of the container's create arguments;
- :mod:`.files`: the private files' tar in, a job's files out (pure);
- :mod:`.network`: the isolated bridge, and where the server dials published ports;
- :mod:`.state`: what the daemon's answers mean (state, ports, stats, engine);
- :mod:`.backend`: :class:`DockerBackend`, the I/O that ties them together.
"""

from __future__ import annotations

from .backend import DockerBackend
from .client import (
    CONNECT_TIMEOUT,
    DEFAULT_SOCKET,
    daemon_url,
    docker_client,
    forget_client,
    root_cause,
)
from .containers import (
    DEFAULT_USER,
    READ_ONLY_HOME,
    container_env,
    container_user,
    create_args,
    gpu_request,
    host_config_args,
    image_home,
    image_user,
    mounted_plan,
    mounts,
    needs_image_user,
    published_ports,
    writable_home,
)
from .files import files_root, private_tar, regular_files, split_files
from .network import (
    ICC_OPTION,
    ISOLATED_NETWORK,
    check_binding,
    connect_address,
    forget_network,
    is_loopback,
    isolated_network,
)
from .state import engine_info, host_ports, workload_status, workloads

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_SOCKET",
    "DEFAULT_USER",
    "ICC_OPTION",
    "ISOLATED_NETWORK",
    "READ_ONLY_HOME",
    "DockerBackend",
    "check_binding",
    "connect_address",
    "container_env",
    "container_user",
    "create_args",
    "daemon_url",
    "docker_client",
    "engine_info",
    "files_root",
    "forget_client",
    "forget_network",
    "gpu_request",
    "host_config_args",
    "host_ports",
    "image_home",
    "image_user",
    "is_loopback",
    "isolated_network",
    "mounted_plan",
    "mounts",
    "needs_image_user",
    "private_tar",
    "published_ports",
    "regular_files",
    "root_cause",
    "split_files",
    "workload_status",
    "workloads",
    "writable_home",
]
