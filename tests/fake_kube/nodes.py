"""The fake cluster's Node objects (core/v1, cluster-scoped, read-only: list and get), as a
v1.31 kubelet registers and updates them: labels, taints, Ready and pressure conditions,
``nodeInfo``, capacity, and ``status.images``: the images the node holds, which here are
those a pod ran on that node (every node shares the one local Docker engine, so "holds"
means "has run a pod of"; sizes come from the engine). A test adds nodes with
:meth:`Nodes.add` (``FakeCluster.add_node``), with taints if it likes.

Also the placement rules the fake scheduler and the DaemonSet controller share: a pod
pinned to one node (``spec.nodeName``, or the ``metadata.name`` node-affinity field term the
DaemonSet controller writes) goes there only; a node's ``NoSchedule`` / ``NoExecute`` taints
keep out pods that do not tolerate them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
from aiohttp import web

from .podoutput import bad_request, status
from .selectors import SelectorError, field_matcher, label_matcher
from .store import Store, now

HOSTNAME = "kubernetes.io/hostname"
#: what every real node carries besides its hostname
DEFAULT_LABELS = {
    "beta.kubernetes.io/arch": "amd64",
    "beta.kubernetes.io/os": "linux",
    "kubernetes.io/arch": "amd64",
    "kubernetes.io/os": "linux",
}
_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def pinned_node(pod: dict[str, Any]) -> str | None:
    """The one node a pod may go to: ``spec.nodeName``, or the node-affinity term
    ``metadata.name In [node]`` (how the DaemonSet controller pins its pods); else None."""
    spec = pod["spec"]
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("operator") == "In":
                return (field.get("values") or [None])[0]
    return None


def tolerated(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    """Whether a toleration matches the taint (key, operator Equal/Exists, value, effect)."""
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def taints_allow(taints: list[dict[str, Any]], tolerations: list[dict[str, Any]]) -> bool:
    """No ``NoSchedule`` / ``NoExecute`` taint is left untolerated."""
    return all(
        tolerated(t, tolerations) for t in taints if t.get("effect") in ("NoSchedule", "NoExecute")
    )


class Nodes:
    """The nodes' labels are the kubelet's list (``kubelet.nodes``, the autoscaler appends
    to it); their taints, uids and the images they hold live here."""

    def __init__(self, store: Store, labels: list[dict[str, str]], docker_client: Any):
        self.store, self.labels, self.docker = store, labels, docker_client
        self.taints: dict[str, list[dict[str, Any]]] = {}  # hostname -> taints
        self.images: dict[str, list[str]] = {}  # hostname -> image references, first use order
        self._meta: dict[str, dict[str, Any]] = {}  # hostname -> uid, creation, rv
        self._sizes: dict[str, tuple[list[str], int]] = {}  # image -> (names, size)
        #: called when a node joins (the DaemonSet controller places its pods there)
        self.on_add: list[Callable[[], None]] = []

    def names(self) -> list[str]:
        return [n[HOSTNAME] for n in self.labels]

    def fits(self, pod: dict[str, Any], node: dict[str, str]) -> bool:
        """Whether the scheduler may bind ``pod`` to the node with these labels (pin and
        taints; the node selector is the scheduler's own test)."""
        name = node[HOSTNAME]
        pinned = pinned_node(pod)
        if pinned is not None and pinned != name:
            return False
        return taints_allow(self.taints.get(name, []), pod["spec"].get("tolerations") or [])

    def add(
        self, name: str, labels: dict[str, str] | None = None, taints: list | None = None
    ) -> None:
        """A new node (call on the cluster's loop, or before it starts)."""
        self.labels.append({**DEFAULT_LABELS, **(labels or {}), HOSTNAME: name})
        if taints:
            self.taints[name] = [dict(t) for t in taints]
        for hook in self.on_add:
            hook()

    def changed(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """A store hook: a pod that runs on a node leaves its images there."""
        if kind != "pods" or event == "DELETED":
            return
        node = obj["spec"].get("nodeName")
        if not node or (obj.get("status") or {}).get("phase") != "Running":
            return
        held = self.images.setdefault(node, [])
        for c in obj["spec"]["containers"]:
            if c["image"] not in held:
                held.append(c["image"])
                self._bump(node)

    def _bump(self, name: str) -> None:
        # the store's version as it is, not a new one: a version no event carries would
        # keep every watch looking for that event (nodes are not watched here)
        self._info(name)["resourceVersion"] = str(self.store.rv)

    def _info(self, name: str) -> dict[str, Any]:
        if name not in self._meta:
            self._meta[name] = {
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now(),
                "resourceVersion": str(self.store.rv),
            }
        return self._meta[name]

    def _image_entry(self, ref: str) -> tuple[list[str], int]:
        """(names, size) of an image as the runtime reports it (blocking: a thread)."""
        if ref not in self._sizes:
            try:
                attrs = self.docker.api.inspect_image(ref)
            except docker.errors.DockerException:
                return [ref], 0
            names = [ref] + [t for t in attrs.get("RepoTags") or [] if t != ref]
            names += list(attrs.get("RepoDigests") or [])
            self._sizes[ref] = (names, int(attrs.get("Size") or 0))
        return self._sizes[ref]

    async def node(self, labels: dict[str, str]) -> dict[str, Any]:
        """The Node object of the node with these labels."""
        name = labels[HOSTNAME]
        meta = self._info(name)
        images = []
        for ref in self.images.get(name, []):
            names, size = await asyncio.to_thread(self._image_entry, ref)
            images.append({"names": names, "sizeBytes": size})
        stamp = meta["creationTimestamp"]
        spec: dict[str, Any] = {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
        if self.taints.get(name):
            spec["taints"] = [dict(t) for t in self.taints[name]]
        capacity = {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "60Gi"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": stamp,
                "labels": {**DEFAULT_LABELS, **labels},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": spec,
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": name},
                ],
                "capacity": capacity,
                "allocatable": dict(capacity),
                "conditions": [
                    {
                        "type": t,
                        "status": s,
                        "reason": r,
                        "message": m,
                        "lastHeartbeatTime": now(),
                        "lastTransitionTime": stamp,
                    }
                    for t, s, r, m in _CONDITIONS
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "images": images,
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": meta["uid"],
                    "containerRuntimeVersion": "docker://20.10.0-fake",
                    "kernelVersion": "6.1.0",
                    "kubeProxyVersion": "v1.31.0-fake",
                    "kubeletVersion": "v1.31.0-fake",
                    "machineID": meta["uid"].replace("-", ""),
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "systemUUID": meta["uid"],
                },
            },
        }

    # ------------------------------------------------------------------ routes

    async def list_nodes(self, request: web.Request) -> web.Response:
        try:
            labels = label_matcher(request.query.get("labelSelector"))
            fields = field_matcher("nodes", request.query.get("fieldSelector"))
        except SelectorError as exc:
            return bad_request(str(exc))
        items = [await self.node(n) for n in list(self.labels)]
        items = [n for n in items if labels(n["metadata"]["labels"]) and fields(n)]
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "NodeList",
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )

    async def read_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for labels in list(self.labels):
            if labels[HOSTNAME] == name:
                return web.json_response(await self.node(labels))
        return status(404, "NotFound", f'nodes "{name}" not found')
