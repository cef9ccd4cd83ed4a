"""Backends run workloads (kernels, jobs) for an execution config: Docker or Kubernetes."""

from __future__ import annotations

from ..config import ExecutionConfig
from .base import Backend, BackendError, BackendUnavailable, ImageMissing

__all__ = ["Backend", "BackendError", "BackendUnavailable", "ImageMissing", "backend_for"]


def backend_for(config: ExecutionConfig) -> Backend:
    """The backend a config names (imported lazily: a Docker-only site needs no kube config)."""
    if config.backend == "docker":
        from .docker import DockerBackend

        return DockerBackend(config)
    if config.backend == "kubernetes":
        from .kubernetes import KubernetesBackend

        return KubernetesBackend(config)
    raise BackendError(f"execution config {config.name!r}: unknown backend {config.backend!r}")
