"""Owner-reference garbage collection, as the cluster's garbage collector does it: an object
whose owners (``metadata.ownerReferences``, matched by uid, in its namespace or
cluster-scoped) are all gone is deleted; one that keeps some owners loses the references to
the gone ones. It runs after each delete and after each object that names owners is
stored, in the background, as the real collector does (a test waits for its effect).

``propagationPolicy: Orphan`` on a delete strips the owner's references from its dependents
instead; ``Foreground`` deletes the dependents before the owner (without the owner's
``foregroundDeletion`` finalizer: it does not wait for dependent pods to finish).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

from .store import Store

Delete = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


class GarbageCollector:
    """Deletes dependents whose owners are gone, through ``delete`` (kind, ns, name, obj),
    which deletes as the API does (pods gracefully)."""

    def __init__(self, store: Store, delete: Delete):
        self.store, self.delete = store, delete
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def schedule(self) -> None:
        """Sweep soon (once more if a sweep is running); on the cluster's loop."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            await self.sweep()

    def _live(self) -> set[tuple[str | None, str]]:
        """(namespace or None for cluster-scoped, uid) of every stored object."""
        live: set[tuple[str | None, str]] = {
            (None, ns["metadata"]["uid"]) for ns in self.store.namespaces.values()
        }
        for objects in self.store.objects.values():
            for (ns, _), obj in objects.items():
                live.add((ns, obj["metadata"]["uid"]))
        return live

    async def sweep(self) -> None:
        """One pass over every object that names owners (repeated while it deletes, for
        chains of owners)."""
        while True:
            live, deleted = self._live(), False
            for kind, objects in self.store.objects.items():
                for (ns, name), obj in list(objects.items()):
                    meta = obj["metadata"]
                    refs = meta.get("ownerReferences") or []
                    if not refs or meta.get("deletionTimestamp"):
                        continue
                    kept = [r for r in refs if {(ns, r.get("uid")), (None, r.get("uid"))} & live]
                    if not kept:
                        await self.delete(kind, ns, name, obj)
                        deleted = True
                    elif len(kept) < len(refs):
                        await self._set_owners(kind, obj, kept)
            if not deleted:
                return

    async def _set_owners(self, kind: str, obj: dict[str, Any], refs: list[dict[str, Any]]) -> None:
        obj = copy.deepcopy(obj)
        obj["metadata"]["ownerReferences"] = refs
        await self.store.put(kind, obj, "MODIFIED")

    def dependents(self, ns: str | None, uid: str) -> list[tuple[str, dict[str, Any]]]:
        """(kind, object) of what names ``uid`` among its owners."""
        return [
            (kind, obj)
            for kind, objects in self.store.objects.items()
            for (obj_ns, _), obj in objects.items()
            if (ns is None or obj_ns == ns)
            and any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])
        ]

    async def orphan(self, ns: str | None, uid: str) -> None:
        """Strip the references to ``uid`` from its dependents (propagationPolicy: Orphan)."""
        for kind, obj in self.dependents(ns, uid):
            refs = [r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != uid]
            await self._set_owners(kind, obj, refs)

    async def delete_dependents(self, ns: str | None, uid: str) -> None:
        """Delete ``uid``'s dependents now (propagationPolicy: Foreground)."""
        for kind, obj in self.dependents(ns, uid):
            meta = obj["metadata"]
            if not meta.get("deletionTimestamp"):
                await self.delete(kind, meta["namespace"], meta["name"], obj)
