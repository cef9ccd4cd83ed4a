"""Placement over several Docker daemons (``docker.hosts``), the pure part: what each host
has room for, and which one a start goes to, and why, in words a user reads.

A host's room is read from the daemon, not remembered: its memory (``docker info``, or the
``memory`` its entry allows this product), less the memory limits of this product's
containers running there (label :data:`.containers.MEMORY_LIMIT`), and its GPUs, less
those held (label :data:`.gpus.GPU_IDS`). So every server sees the same room. A start
asking for GPUs goes to the host with the most free GPUs, then the most free memory;
any other start to the host with the most free memory; ties go to the first listed. A
host that does not answer is skipped, its reason said.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...config import format_size
from ...ownership import MANAGED, PREFIX
from .containers import MEMORY_LIMIT
from .gpus import HOLDING_STATES, GPUsBusy

#: the name of the host (of ``docker.hosts``) a workload runs on
DOCKER_HOST = PREFIX + "docker-host"
#: why it was placed there, in words
PLACEMENT = PREFIX + "placement"
#: at most this much of a reason goes into a label
REASON_MAX = 400


@dataclass(frozen=True)
class HostRoom:
    """One host as a census found it; ``error`` set when it did not answer."""

    name: str
    url: str
    error: str | None = None
    memory_total: int | None = None
    memory_used: int = 0
    workloads: int = 0
    gpus_total: int | None = None
    gpus_free: int | None = None

    @property
    def memory_free(self) -> int | None:
        if self.memory_total is None:
            return None
        return max(self.memory_total - self.memory_used, 0)


def memory_held(rows: Iterable[dict[str, Any]]) -> tuple[int, int]:
    """(bytes of memory limits, number) of this product's live containers in a listing."""
    used = count = 0
    for r in rows:
        labels = r.get("Labels") or {}
        if labels.get(MANAGED) != "true" or r.get("State") not in HOLDING_STATES:
            continue
        count += 1
        with contextlib.suppress(ValueError):
            used += int(labels.get(MEMORY_LIMIT, "0"))
    return used, count


def describe(room: HostRoom) -> str:
    """A host's room in words: ``2 of 4 GPUs free, 20 GiB of 24 GiB memory free``."""
    parts = []
    if room.gpus_total is not None:
        parts.append(f"{room.gpus_free} of {room.gpus_total} GPUs free")
    if room.memory_total is not None:
        free = format_size(room.memory_free or 0)
        parts.append(f"{free} of {format_size(room.memory_total)} memory free")
    parts.append(f"{room.workloads} workload(s) running")
    return ", ".join(parts)


def why_not(room: HostRoom, memory: int | None, gpus: int) -> str | None:
    """Why a start cannot go to this host now (None: it fits)."""
    if room.error is not None:
        return room.error
    if gpus and (room.gpus_free or 0) < gpus:
        return f"{room.gpus_free or 0} of {room.gpus_total or 0} GPUs free, {gpus} asked"
    free = room.memory_free
    if memory and free is not None and free < memory:
        return f"{format_size(free)} memory free, {format_size(memory)} asked"
    return None


def choose_host(
    rooms: list[HostRoom], memory: int | None, gpus: int, queue: bool = False
) -> tuple[str, str]:
    """(the host's name, why: its room and the hosts skipped with their reasons) for a
    start limited to ``memory`` bytes asking ``gpus`` GPUs; :class:`.gpus.GPUsBusy` when no
    host fits (``queue``: may wait, when a host answering could fit it once GPUs or
    memory free)."""
    fits = [r for r in rooms if why_not(r, memory, gpus) is None]
    skipped = [f"{r.name} ({why_not(r, memory, gpus)})" for r in rooms if r not in fits]
    if not fits:
        could = [
            r
            for r in rooms
            if r.error is None
            and (not gpus or (r.gpus_total or 0) >= gpus)
            and (not memory or r.memory_total is None or r.memory_total >= memory)
        ]
        raise GPUsBusy("no host has room: " + "; ".join(skipped), queue=queue and bool(could))
    order = {r.name: i for i, r in enumerate(rooms)}

    def rank(r: HostRoom) -> tuple[int, int, int]:
        free_memory = r.memory_free if r.memory_free is not None else 0
        return (-(r.gpus_free or 0) if gpus else 0, -free_memory, order[r.name])

    best = min(fits, key=rank)
    most = "most free GPUs, then memory" if gpus else "most free memory"
    reason = f"host {best.name} ({most}: {describe(best)})"
    others = [f"{r.name} ({describe(r)})" for r in fits if r is not best]
    if others:
        reason += "; also fit: " + ", ".join(others)
    if skipped:
        reason += "; skipped: " + "; ".join(skipped)
    return best.name, reason


def split_id(workload_id: str) -> tuple[str, str]:
    """``host/container`` as (host name, container id); host "" for a bare id."""
    host, sep, container = workload_id.partition("/")
    return (host, container) if sep else ("", workload_id)


def join_id(host: str, container: str) -> str:
    return f"{host}/{container}"
