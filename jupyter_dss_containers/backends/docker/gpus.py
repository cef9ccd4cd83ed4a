"""GPU allocation on a Docker daemon, the pure part: which GPUs a daemon has, which ones
the workloads of this product hold, which ones a start gets, and who won a race.

Docker counts nothing: ``--gpus 1`` gives every container GPU 0. Here ``gpus: N`` gets N
device ids no running (or just created) workload of this product holds, and the ids are
written on the container (label :data:`GPU_IDS`), so every server on the daemon reads the
same answer from a listing: no state of its own, nothing lost when a server restarts.

Two servers may pick the same free GPU at the same moment. Both create their container
with the label, then list again: of two containers holding one id, the one the daemon
created first keeps it (creation time, then container id) and the other is removed and
retried (:func:`lost_to`). The daemon orders its own creations, so both servers reach the
same verdict and no GPU is handed out twice; at worst both back off and retry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ...errors import ReportedError
from ...ownership import CONFIG, JOB_ID, KERNEL_ID, KIND, OWNER, PREFIX
from ..base import BackendError

#: the device ids a container holds, comma-separated (``0,2``)
GPU_IDS = PREFIX + "gpu-ids"
#: container states that hold their GPUs (a created container is about to start)
HOLDING_STATES = frozenset({"created", "running", "restarting", "paused"})
#: ``GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5f0c...)``, as ``nvidia-smi -L`` prints it
_LINE = re.compile(r"^GPU (\d+):\s*(.*?)\s*(?:\(UUID:\s*([^)]+)\))?\s*$")


class GPUsBusy(ReportedError, BackendError):
    """Fewer free GPUs than a start asks for. ``queue``: it may wait for some to free."""

    status = 429

    def __init__(self, message: str, queue: bool = False):
        super().__init__(message)
        self.queue = queue


@dataclass(frozen=True)
class Gpu:
    """One GPU of a daemon's host."""

    index: str
    name: str
    uuid: str | None = None


@dataclass(frozen=True)
class Holder:
    """A container that holds GPUs, as its listing tells it."""

    id: str
    ids: tuple[str, ...]
    created: int
    state: str
    what: str  # "kernel 1f2e... of alice on gpu"


def parse_gpu_list(text: str) -> list[Gpu]:
    """The GPUs in ``nvidia-smi -L`` output (lines that are not GPUs are skipped)."""
    found = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            found.append(Gpu(match.group(1), match.group(2), match.group(3)))
    return found


def gpu_ids_of(labels: dict[str, str]) -> tuple[str, ...]:
    """The device ids a workload's labels say it holds."""
    raw = labels.get(GPU_IDS, "")
    return tuple(i for i in raw.split(",") if i)


def holders(rows: Iterable[dict[str, Any]]) -> list[Holder]:
    """The containers of a listing (``GET /containers/json?all=1``) that hold GPUs."""
    out = []
    for r in rows:
        labels = r.get("Labels") or {}
        ids = gpu_ids_of(labels)
        if not ids or r.get("State") not in HOLDING_STATES:
            continue
        key = labels.get(KERNEL_ID) or labels.get(JOB_ID) or r["Id"][:12]
        what = (
            f"{labels.get(KIND, 'workload')} {key} of {labels.get(OWNER, '?')} "
            f"on {labels.get(CONFIG, '?')}"
        )
        out.append(Holder(r["Id"], ids, int(r.get("Created") or 0), r["State"], what))
    return out


def held(found: Iterable[Holder], exclude: str | None = None) -> dict[str, Holder]:
    """Device id -> the container holding it (``exclude``: a container id not counted)."""
    return {i: h for h in found if h.id != exclude for i in h.ids}


def choose(gpus: list[Gpu], taken: dict[str, Holder], count: int) -> tuple[str, ...] | None:
    """The first ``count`` free device ids in the daemon's order, or None if too few."""
    free = [g.index for g in gpus if g.index not in taken]
    return tuple(free[:count]) if len(free) >= count else None


def busy_message(gpus: list[Gpu], taken: dict[str, Holder], count: int, where: str) -> str:
    """Why ``count`` GPUs cannot be had now, naming what holds them."""
    holding = sorted({h.what for g in gpus if (h := taken.get(g.index))})
    free = sum(1 for g in gpus if g.index not in taken)
    if count > len(gpus):
        return f"{where} has {len(gpus)} GPU(s), this config asks for {count}"
    return f"{count} GPU(s) asked, {free} of {len(gpus)} free on {where}; held by " + (
        ", ".join(holding) or "nothing"
    )


def lost_to(mine: Holder, others: Iterable[Holder]) -> Holder | None:
    """The earlier-created container holding one of ``mine``'s ids (the daemon's creation
    order, then the container id), or None when ``mine`` keeps them all."""
    rivals = [
        o
        for o in others
        if o.id != mine.id
        and set(o.ids) & set(mine.ids)
        and (o.created, o.id) < (mine.created, mine.id)
    ]
    return min(rivals, key=lambda o: (o.created, o.id)) if rivals else None


def created_ns(text: str) -> int:
    """An inspect's ``Created`` (RFC 3339 with nanoseconds) as an orderable integer."""
    match = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?", text or "")
    if not match:
        return 0
    whole = "".join(match.groups()[:6])
    return int(whole) * 10**9 + int((match.group(7) or "0").ljust(9, "0")[:9])


def free_count(gpus: list[Gpu], taken: dict[str, Holder]) -> int:
    return sum(1 for g in gpus if g.index not in taken)
