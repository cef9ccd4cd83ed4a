"""The fake API server's objects: namespaced objects by kind, namespaces, and the event log
that watches replay from a resourceVersion. Used from the cluster's event loop only."""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import datetime, timezone
from typing import Any

KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "resourcequotas": "ResourceQuota",
    "limitranges": "LimitRange",
    "networkpolicies": "NetworkPolicy",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "events": "Event",
    "serviceaccounts": "ServiceAccount",
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "daemonsets": "DaemonSet",
}
_RBAC = "rbac.authorization.k8s.io/v1"
#: others are core "v1"
API_VERSIONS = {
    "networkpolicies": "networking.k8s.io/v1",
    "roles": _RBAC,
    "rolebindings": _RBAC,
    "daemonsets": "apps/v1",
}


def now() -> str:
    """A timestamp as the API server writes them."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: kind -> the resource's name in messages (``pods "x" not found``)
RESOURCE_NAMES = {k: k for k in KINDS} | {
    k: f"{k}.{v.rpartition('/')[0]}" for k, v in API_VERSIONS.items()
}


class Store:
    """Objects with resourceVersions; each change is an event watches see."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self.namespaces: dict[str, dict[str, Any]] = {}
        #: (rv, kind, type, object, the object before: None for ADDED)
        self.events: list[tuple[int, str, str, dict[str, Any], dict[str, Any] | None]] = []
        self.rv = 0
        self.changed: asyncio.Condition | None = None  # made on the cluster's loop
        self.on_change: list[Any] = []  # callables (kind, event, obj): the garbage collector

    def add_namespace(self, name: str) -> dict[str, Any]:
        self.rv += 1
        ns = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(self.rv),
                "creationTimestamp": now(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self.namespaces[name] = ns
        return ns

    async def put(self, kind: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        """Store (or, for DELETED, drop) ``obj`` at a new resourceVersion; wake watches."""
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        key = (meta["namespace"], meta["name"])
        before = self.objects[kind].get(key)
        if event == "DELETED":
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = obj
        self.events.append((self.rv, kind, event, copy.deepcopy(obj), before))
        async with self.changed:
            self.changed.notify_all()
        for hook in self.on_change:
            hook(kind, event, obj)
        return obj

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self.objects["pods"].items() if ns == namespace]

    def in_namespace(self, kind: str, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        """(name, object) of a kind in one namespace."""
        return [(n, o) for (ns, n), o in self.objects[kind].items() if ns == namespace]

    async def bind(self, ns: str, name: str, node: str, **status: Any) -> None:
        """The scheduler's binding: ``spec.nodeName`` set (and the kubelet's first status)."""
        obj = self.objects["pods"].get((ns, name))
        if obj is None:
            return
        obj = copy.deepcopy(obj)
        obj["spec"]["nodeName"] = node
        obj["status"].update(status)
        await self.put("pods", obj, "MODIFIED")

    async def update_status(self, ns: str, name: str, **status: Any) -> None:
        """A pod's status changed by the kubelet (nothing if the pod is gone)."""
        obj = self.objects["pods"].get((ns, name))
        if obj is None:
            return
        obj = copy.deepcopy(obj)
        obj["status"].update(status)
        await self.put("pods", obj, "MODIFIED")
