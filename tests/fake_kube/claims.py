"""PersistentVolumeClaims in the fake cluster: checked at create time in the API server's
words, bound at once (as a default StorageClass with ``Immediate`` binding binds them), and
backed on the one node by a host folder, ``<root>/<namespace>/<claim>``, that the kubelet
bind-mounts (with a mount's ``subPath``) into the pod's container.

What the kubelet does to such a volume is copied here: ``fsGroup`` makes the volume the
pod group's (group read-write, folders set-gid), a missing ``subPath`` folder is made with
the volume root's mode, and a ``subPath`` that leads out of the volume (``..``, a symlink)
fails the container's start. Deleting a claim deletes its folder (reclaim policy Delete).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from typing import Any

from .store import Store

KIND = "persistentvolumeclaims"
PREEMPTION = "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."


class ClaimError(Exception):
    """A claim volume the kubelet cannot give the container (the waiting message)."""


def claim_refusal(name: str, claim: dict[str, Any]) -> str | None:
    """The 422 message for a claim without access modes or a storage request, else None."""
    spec = claim.get("spec") or {}
    problems = []
    if not spec.get("accessModes"):
        problems.append("spec.accessModes: Required value: at least 1 access mode is required")
    if ((spec.get("resources") or {}).get("requests") or {}).get("storage") is None:
        problems.append("spec.resources[storage]: Required value")
    if not problems:
        return None
    return f'PersistentVolumeClaim "{name}" is invalid: [{", ".join(problems)}]'


def bind(claim: dict[str, Any]) -> None:
    """The claim as the volume controller leaves it once a volume is provisioned: Bound."""
    spec = claim["spec"]
    spec.setdefault("storageClassName", "standard")
    spec.setdefault("volumeMode", "Filesystem")
    spec["volumeName"] = f"pvc-{claim['metadata']['uid']}"
    claim["status"] = {
        "phase": "Bound",
        "accessModes": list(spec["accessModes"]),
        "capacity": {"storage": spec["resources"]["requests"]["storage"]},
    }


def claim_names(pod: dict[str, Any]) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"].get("volumes") or []
        if "persistentVolumeClaim" in v
    ]


def unschedulable_message(store: Store, ns: str, pod: dict[str, Any]) -> str | None:
    """The scheduler's message for a pod whose claim is not there, else None."""
    for claim in claim_names(pod):
        if (ns, claim) not in store.objects[KIND]:
            missing = f'persistentvolumeclaim "{claim}" not found'
            return f"0/1 nodes are available: {missing}. {PREEMPTION}"
    return None


class ClaimFolders:
    """The node's storage: one host folder per claim."""

    def __init__(self, root: str):
        self.root = root

    def folder(self, ns: str, claim: str) -> str:
        return os.path.join(self.root, ns, claim)

    def mount_source(
        self, ns: str, claim: str, sub_path: str | None, fs_group: int | None, mount: str
    ) -> str:
        """The host folder to bind for one volumeMount of a claim (made on first use)."""
        volume = self.folder(ns, claim)
        os.makedirs(volume, mode=0o755, exist_ok=True)
        if fs_group is not None:
            _own(volume, fs_group)
        if not sub_path:
            return volume
        target = os.path.join(volume, sub_path)
        real, base = os.path.realpath(target), os.path.realpath(volume)
        if not real.startswith(base + os.sep):
            raise ClaimError(
                f'failed to prepare subPath for volumeMount "{mount}" of container "kernel"'
            )
        if not os.path.isdir(real):
            info = os.stat(volume)
            os.makedirs(real, exist_ok=True)
            os.chown(real, -1, info.st_gid)
            os.chmod(real, stat.S_IMODE(info.st_mode))
        return real

    def changed(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """A store hook: a deleted claim's folder goes too (off the loop)."""
        if kind == KIND and event == "DELETED":
            meta = obj["metadata"]
            folder = self.folder(meta["namespace"], meta["name"])
            asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, folder, True)


def _own(volume: str, gid: int) -> None:
    """The kubelet's volume ownership for ``fsGroup`` (policy OnRootMismatch: once)."""
    if os.stat(volume).st_gid == gid:
        return
    for folder, dirs, files in os.walk(volume):
        for path in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            if os.path.islink(path):
                continue
            info = os.lstat(path)
            os.chown(path, -1, gid)
            extra = 0o2770 if stat.S_ISDIR(info.st_mode) else 0o660
            os.chmod(path, stat.S_IMODE(info.st_mode) | extra)
