"""Where a config's work runs and with what resources, in words: one answer for the CLI
(``configs``), the REST API (``GET configs``) and so the sidebar.

Pure: it reads the parsed config (and, for a Docker config without a host, the
``DOCKER_HOST`` the docker CLI would use), never a daemon or a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import DockerSettings, ExecutionConfig, KubernetesSettings, format_size


@dataclass(frozen=True)
class Placement:
    """Where a config puts a user's workloads, and the resources each one gets."""

    #: the Docker daemon's address, or ``kubernetes <context>, namespace <namespace>``
    where: str
    #: the resources as data (``cpus``, ``memory_bytes``, ``requests``, ``limits``, ...),
    #: and ``summary``, one line such as ``1 CPU, 512 MiB``
    resources: dict[str, Any]

    @property
    def summary(self) -> str:
        return self.resources["summary"]


def placement(config: ExecutionConfig, user: str) -> Placement:
    """Where and with what ``user``'s workloads of ``config`` run (``${user}`` expanded)."""
    return Placement(where(config, user), resources(config))


def where(config: ExecutionConfig, user: str) -> str:
    """The Docker daemon's address, or the cluster context and ``user``'s namespace."""
    if config.backend == "kubernetes":
        return _kube_where(config.kubernetes, user)
    from .backends.docker import daemon_url  # the docker SDK: only for Docker configs

    if config.docker.hosts:  # several daemons: each start goes to one with room
        return "docker hosts " + ", ".join(
            f"{h.name} ({daemon_url(h.settings)})" for h in config.docker.hosts
        )
    return daemon_url(config.docker)


def resources(config: ExecutionConfig) -> dict[str, Any]:
    """The resources a config gives each kernel or job, with a one-line ``summary``."""
    if config.backend == "kubernetes":
        return _kube_resources(config.kubernetes)
    return _docker_resources(config.docker)


def _kube_where(settings: KubernetesSettings, user: str) -> str:
    context = "in-cluster" if settings.in_cluster else (settings.context or "the current context")
    return f"kubernetes {context}, namespace {settings.namespace(user)}"


def _kube_resources(settings: KubernetesSettings) -> dict[str, Any]:
    raw = settings.resources
    out: dict[str, Any] = {k: dict(raw[k]) for k in ("requests", "limits") if k in raw}
    parts = [f"{k} " + ", ".join(f"{n} {v}" for n, v in out[k].items()) for k in out if out[k]]
    out["summary"] = "; ".join(parts) or "no requests or limits"
    return out


def _docker_resources(d: DockerSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    words = []
    if d.cpus:
        out["cpus"] = d.cpus
        words.append(f"{d.cpus:g} CPU" + ("s" if d.cpus != 1 else ""))
    if d.memory:
        out["memory_bytes"] = d.memory
        words.append(format_size(d.memory))
    if d.gpus is not None:
        out["gpus"] = list(d.gpus) if isinstance(d.gpus, tuple) else d.gpus
        words.append(f"GPUs {out['gpus']}")
    if d.pids:
        out["pids"] = d.pids
    if d.shm_size:
        out["shm_size_bytes"] = d.shm_size
    if d.runtime:
        out["runtime"] = d.runtime
    out["summary"] = ", ".join(words) or "no limits"
    return out
