"""Where the launcher looks on a cluster whose config gives each user a namespace.

A Kubernetes backend lists one namespace: the process user's. A launcher starts pods for
everyone, so with ``namespace: dss-${user}`` its budgets, its reaper and a listing for a
trusted server must look in every user's namespace: those the backend created (labelled
``app.kubernetes.io/managed-by: dss-containers``, found when the launcher's role may list
namespaces) and those of every user it knows by name (the callers it served, the
``groups:`` map, the ``budgets:`` users), so that a Role limited to named namespaces works
too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..backends.base import BackendError
from ..backends.kubernetes import client as kube
from ..backends.kubernetes.manifests import MANAGED_BY
from ..config import ExecutionConfig

log = logging.getLogger("dss_containers.launcher")


def per_user(config: ExecutionConfig) -> bool:
    """Whether the config's workloads go to a namespace of their owner's."""
    return config.backend == "kubernetes" and "${user}" in config.kubernetes.namespace_template


def namespace_of_id(workload_id: str) -> str | None:
    """The namespace of a pod's workload id (``namespace/name``)."""
    namespace, sep, name = workload_id.partition("/")
    return namespace if sep and namespace and name else None


def users_namespaces(config: ExecutionConfig, users: Iterable[str]) -> set[str]:
    return {config.kubernetes.namespace(u) for u in users if u}


async def managed_namespaces(config: ExecutionConfig) -> set[str]:
    """The namespaces the backend created on the config's cluster (none when the launcher
    may not list namespaces: it then looks only in the namespaces of users it knows)."""
    import kubernetes

    settings = config.kubernetes
    selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
    try:
        api = kubernetes.client.CoreV1Api(await _client(config))
        found = await kube.call(kube.where(settings), api.list_namespace, label_selector=selector)
    except (BackendError, kubernetes.client.ApiException) as exc:
        log.info("namespaces of config %s not listed (named users only): %s", config.name, exc)
        return set()
    return {n.metadata.name for n in found.items}


async def _client(config: ExecutionConfig):
    import asyncio

    return await asyncio.to_thread(kube.api_client, config.kubernetes)
