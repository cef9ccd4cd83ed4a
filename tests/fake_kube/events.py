"""core/v1 Events as the real components write them: one Event per (object, reason,
message, source), its ``count`` and ``lastTimestamp`` bumped when the same thing happens
again (the client-go event recorder's aggregation), named ``<object>.<hex>``.

Written by the fake scheduler (``FailedScheduling``, source ``default-scheduler``) and the
fake autoscaler (:mod:`.autoscaler`, source ``cluster-autoscaler``); listed and watched
through the generic namespaced routes, with the field selectors the API server allows on
events (``involvedObject.name=...``, ``reason=...``, ``source=...``, ``type=...``).
"""

from __future__ import annotations

import copy
import secrets
import uuid
from typing import Any

from .store import Store, now

KIND = "events"


def event_manifest(
    obj: dict[str, Any], reason: str, message: str, component: str, type_: str = "Normal"
) -> dict[str, Any]:
    """A new Event about ``obj`` (a stored object), as the recorder first writes it."""
    meta = obj["metadata"]
    stamp = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{secrets.token_hex(8)}",
            "namespace": meta["namespace"],
            "uid": str(uuid.uuid4()),
            "creationTimestamp": stamp,
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "type": type_,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": "",
    }


async def record(
    store: Store,
    obj: dict[str, Any],
    reason: str,
    message: str,
    component: str,
    type_: str = "Normal",
) -> dict[str, Any]:
    """Write (or bump the count of) the Event saying ``reason: message`` about ``obj``."""
    meta = obj["metadata"]
    for _, event in store.in_namespace(KIND, meta["namespace"]):
        if (
            event["involvedObject"]["uid"] == meta["uid"]
            and (event["reason"], event["message"]) == (reason, message)
            and event["source"]["component"] == component
        ):
            event = copy.deepcopy(event)
            event["count"] += 1
            event["lastTimestamp"] = now()
            return await store.put(KIND, event, "MODIFIED")
    return await store.put(KIND, event_manifest(obj, reason, message, component, type_), "ADDED")


def about(store: Store, ns: str, name: str) -> list[dict[str, Any]]:
    """The Events about the object ``name`` in ``ns``, oldest first (for tests)."""
    found = [e for _, e in store.in_namespace(KIND, ns) if e["involvedObject"]["name"] == name]
    return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))
