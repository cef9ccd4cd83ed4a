"""Pre-pulling on a cluster: create the DaemonSet :mod:`.prepull` builds, follow its status
and its pods until every node that should run it holds the image (reporting each node as it
gets there), then delete it (or keep it, for nodes that join later). Also how the backend
lists and removes such sets, so that ``cleanup`` and the start-up reaper know the kind.

The status is read every ``poll`` seconds (a set's pods change a few times per node; a
watch would buy nothing here). A node that fails (``ErrImagePull``, ``ImagePullBackOff``,
``Unschedulable``, in the cluster's words), no node at all, or the timeout ends the
command with the reason, the set removed unless it is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from ... import ownership
from ..base import BackendError, Workload
from . import prepull
from .access import PREPULL_RIGHTS, check_rights
from .manifests import label_values
from .prepull import KEEP, SET_LABEL, NodeProgress

Report = Callable[[NodeProgress], None]


@dataclass
class PrepullResult:
    """Where the set ran, each node's last state, whether it was kept, and the nodes whose
    ``status.images`` name the image (None: this account may not list nodes)."""

    name: str
    namespace: str
    image: str
    nodes: list[NodeProgress]
    kept: bool
    holding: list[str] | None = None


async def _apps(backend: Any) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(await backend._api())


def _wants_sets(labels: dict[str, str]) -> bool:
    """Whether a listing by these labels may include pre-pull sets (not one of kernels or
    jobs: those listings never pay for, nor need the right to, a DaemonSet list)."""
    return labels.get(ownership.KIND, prepull.KIND) == prepull.KIND


async def list_sets(backend: Any, labels: dict[str, str]) -> list[Workload]:
    """The backend namespace's pre-pull sets carrying ``labels``, as workloads (id
    ``<namespace>/daemonsets/<name>``); none where listing DaemonSets is not allowed (this
    account then made none)."""
    if not _wants_sets(labels):
        return []
    wanted = {ownership.KIND: prepull.KIND, **label_values(labels)}
    selector = ",".join(f"{k}={v}" for k, v in wanted.items())
    apps = await _apps(backend)
    try:
        found = await backend._call(
            apps.list_namespaced_daemon_set, backend.namespace, label_selector=selector
        )
    except (ApiException, BackendError) as exc:
        if "forbidden" in str(exc).lower() or isinstance(exc, ApiException):
            return []
        raise
    return [
        Workload(
            id=prepull.set_id(backend.namespace, s.metadata.name),
            name=s.metadata.name,
            labels=s.metadata.labels or {},
            image=s.spec.template.spec.containers[0].image,
            state="running",
            started_at=str(s.metadata.creation_timestamp),
        )
        for s in found.items
    ]


async def delete_set(backend: Any, namespace: str, name: str) -> None:
    """Delete a set; its pods go with it (the garbage collector, in the background)."""
    apps = await _apps(backend)
    with contextlib.suppress(ApiException):
        await backend._call(
            apps.delete_namespaced_daemon_set, name, namespace, propagation_policy="Background"
        )


async def remove_config_sets(backend: Any) -> list[str]:
    """Delete every pre-pull set of the backend's config (kept ones too); their names."""
    labels = {ownership.KIND: prepull.KIND, ownership.CONFIG: backend.config.name}
    found = await list_sets(backend, labels)
    for workload in found:
        await delete_set(backend, backend.namespace, workload.name)
    return [w.name for w in found]


async def nodes_holding(backend: Any, image: str) -> list[str] | None:
    """The nodes whose ``status.images`` name ``image``; None if nodes cannot be listed."""
    core = await backend._core()
    try:
        found = await backend._call(core.list_node)
    except (ApiException, BackendError):
        return None
    return sorted(
        n.metadata.name
        for n in found.items
        if any(image in (i.names or ()) for i in (n.status.images or ()))
    )


def _states(nodes: list[NodeProgress]) -> str:
    return (
        "; ".join(f"{n.node}: {n.state}{f' ({n.detail})' if n.detail else ''}" for n in nodes)
        or "no pod yet"
    )


async def _create(backend: Any, manifest: dict[str, Any], keep: bool) -> bool:
    """Create the set, or take over the one of that name; whether it goes at the end."""
    apps = await _apps(backend)
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    try:
        await backend._call(apps.create_namespaced_daemon_set, namespace, manifest)
        return not keep
    except BackendError as exc:
        if "already exists" not in str(exc):
            raise
    existing = await backend._call(apps.read_namespaced_daemon_set, name, namespace)
    kept = (existing.metadata.labels or {}).get(KEEP) == "true"
    if keep and not kept:
        patch = {"metadata": {"labels": {KEEP: "true"}}}
        await backend._call(apps.patch_namespaced_daemon_set, name, namespace, patch)
    return not keep and not kept  # someone's kept set stays


async def prepull_on_cluster(
    backend: Any,
    image: str,
    keep: bool = False,
    timeout: float = 600.0,
    report: Report | None = None,
    poll: float = 1.0,
) -> PrepullResult:
    """Pull ``image`` onto every node that could run the backend's config; raises
    :class:`BackendError` with the cluster's reason when a node cannot, or on timeout."""
    from .backend import process_identity_name

    config, namespace = backend.config, backend.namespace
    ownership.this_process().register()  # a reaper elsewhere sees the set's maker alive
    labels = ownership.workload_labels(prepull.KIND, config.name, process_identity_name())
    manifest = prepull.daemon_set_manifest(config, image, namespace, labels, keep)
    name = manifest["metadata"]["name"]
    await backend._ensure_namespace(namespace)
    # a set this account could create but not delete would stay behind: ask first
    await check_rights(await backend._api(), backend.settings, namespace, PREPULL_RIGHTS)
    remove_after = await _create(backend, manifest, keep)
    apps, core = await _apps(backend), await backend._core()
    place = f"{backend._where()}, namespace {namespace}"
    shown: dict[str, NodeProgress] = {}
    began = time.monotonic()
    try:
        while True:
            try:
                daemon_set = await backend._call(apps.read_namespaced_daemon_set, name, namespace)
            except ApiException:
                raise BackendError(f"{place}: DaemonSet {name} was deleted meanwhile") from None
            pods = await backend._call(
                core.list_namespaced_pod, namespace, label_selector=f"{SET_LABEL}={name}"
            )
            progress = prepull.judge(config, daemon_set, pods.items)
            for node in progress.nodes:
                if shown.get(node.node) != node and report is not None:
                    report(node)
                shown[node.node] = node
            if progress.done:
                break
            if progress.failure:
                raise BackendError(f"{place}: pre-pull of {image}: {progress.failure}")
            waited = time.monotonic() - began
            if waited > timeout:
                raise BackendError(
                    f"{place}: pre-pull of {image} not done after {timeout:.0f} s "
                    f"({progress.ready} of {progress.desired} nodes ready): "
                    f"{_states(progress.nodes)}"
                )
            await asyncio.sleep(poll)
    finally:
        if remove_after:
            await asyncio.shield(delete_set(backend, namespace, name))
    holding = await nodes_holding(backend, image)
    return PrepullResult(name, namespace, image, progress.nodes, not remove_after, holding)
