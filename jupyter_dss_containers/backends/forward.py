"""A connection to a TCP port inside a workload, through the engine: no published port.

Docker execs a tiny forwarder in the container (:mod:`.docker.forward`), Kubernetes uses
the API server's pods/portforward (:mod:`.kubernetes.forward`). Either way the caller gets
a plain local socket (one end of a socket pair that threads pump) and, once it ended, the
reason the far side could not connect, if any.
"""

from __future__ import annotations

import socket
import sys
from typing import Protocol

from .base import Backend, BackendError


class ForwardUnsupported(BackendError):
    """This backend cannot reach a workload's ports (a launcher's remote backend)."""


class PortConnection(Protocol):
    """What :func:`open_port` returns."""

    local: socket.socket

    @property
    def errors(self) -> str: ...


async def open_port(backend: Backend, workload_id: str, port: int) -> PortConnection:
    """A connection to ``port`` inside the workload; BackendError when it cannot be made."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"not a TCP port: {port!r}")
    if _is(backend, "docker.hosts", "MultiHostBackend"):  # docker.hosts: its own daemon's
        member, container = backend.member_of(workload_id)  # type: ignore[attr-defined]
        if member is None:
            raise BackendError(f"workload {workload_id}: its host is not in the config")
        backend, workload_id = member, container
    if _is(backend, "docker.backend", "DockerBackend"):
        from .docker.forward import open_port as docker_open

        return await docker_open(backend.settings, workload_id, port)  # type: ignore[attr-defined]
    if _is(backend, "kubernetes.backend", "KubernetesBackend"):
        from .kubernetes.forward import open_port as kube_open

        return await kube_open(backend, workload_id, port)
    raise ForwardUnsupported(
        "this server reaches its engines through a launcher, which does not forward ports "
        "into kernels (yet)"
    )


def _is(backend: Backend, module: str, name: str) -> bool:
    """isinstance, without importing an engine's SDK that no backend of it loaded."""
    loaded = sys.modules.get(f"{__package__}.{module}")
    return loaded is not None and isinstance(backend, getattr(loaded, name))
