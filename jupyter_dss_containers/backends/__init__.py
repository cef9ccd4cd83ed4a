"""Backends run workloads (kernels, jobs) for an execution config: Docker or Kubernetes."""

from __future__ import annotations

from ..config import ExecutionConfig
from .base import Backend, BackendError, BackendUnavailable, ImageMissing

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "ImageMissing",
    "backend_for",
    "local_backend_for",
]


def backend_for(config: ExecutionConfig) -> Backend:
    """The backend a config names, or, when a trusted launcher is configured
    (``$DSS_CONTAINERS_LAUNCHER_URL``), the launcher's API for that config."""
    from .remote import RemoteBackend, launcher_url

    url = launcher_url()
    if url:
        return RemoteBackend(config, url)
    return local_backend_for(config)


def local_backend_for(config: ExecutionConfig) -> Backend:
    """The engine's own backend (imported lazily: a Docker-only site needs no kube config)."""
    if config.backend == "docker" and config.docker.hosts:
        from .docker.hosts import MultiHostBackend

        return MultiHostBackend(config)
    if config.backend == "docker":
        from .docker import DockerBackend

        return DockerBackend(config)
    if config.backend == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(config)
    raise BackendError(f"execution config {config.name!r}: unknown backend {config.backend!r}")
