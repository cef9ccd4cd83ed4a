"""A job's copy of the caller's working folder, where the config shares no workspace.

The job service's half of :mod:`.snapshot`: before the job starts, the folder is packed
(bounded: ``JobService.snapshot_limit``, and what the job's private files may hold) and
travels with the job's files, with its path; the runner unpacks it and hands back the
files the job created or changed there (``workdir/PATH`` in the job folder). When the job
ends, those come back as bytes (bounded: ``JobService.snapshot_return_limit``), nothing
in them is run or unpickled, and each is written only where the server's file is still
what the copy held; the job's output says what was copied back and what was not, and why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os

from ..backends import Backend, BackendError
from ..backends.base import FilesTooLarge
from ..config import ExecutionConfig, format_size
from ..workspace import WorkspaceError, WorkspacePlan, resolve_plan
from . import rlang, snapshot
from .model import Job, JobError, JobRequest

JOB_DIR = rlang.JOB_DIR
ARCHIVE = f"{JOB_DIR}/{snapshot.ARCHIVE_NAME}"
INFO = f"{JOB_DIR}/workdir.json"
BACK = f"{JOB_DIR}/workdir"


async def plan(config: ExecutionConfig, user: str, mount_cwd: bool) -> WorkspacePlan:
    """The submitting process's working folder at the same path in the job (the
    notebook's, when a kernel submits), or nothing (``mount_cwd`` off: the server)."""
    if not mount_cwd:
        return WorkspacePlan()
    try:
        return await asyncio.to_thread(
            resolve_plan,
            config.workspace,
            backend=config.backend,
            remote=config.backend == "docker" and config.docker.is_remote,
            server_root=None,
            cwd=os.getcwd(),
            user=user,
            config_name=config.name,
        )
    except (WorkspaceError, OSError) as exc:
        raise JobError(f"execution config {config.name!r}: {exc}") from None


async def prepare(
    plan: WorkspacePlan,
    request: JobRequest,
    config_name: str,
    files: dict[str, bytes],
    limit: int,
    room: int,
) -> snapshot.Snapshot | None:
    """The snapshot of the plan's folder where nothing is shared (None elsewhere, for an R
    job, or with a ``limit`` of 0), added to ``files``; :class:`JobError` naming the limit
    when the folder holds more than ``limit`` bytes, or packs to more than the ``room``
    left beside the job's other files."""
    folder = plan.snapshot_dir
    if not folder or limit <= 0 or request.kind == "r":  # R: Rscript, no runner to unpack
        return None
    taken = sum(len(data) for data in files.values())
    if taken >= room:  # the inputs alone do not fit: their own limit speaks, not the copy's
        return None
    try:
        snap = await asyncio.to_thread(snapshot.take, folder, limit, max(0, room - taken))
    except snapshot.SnapshotTooBig as exc:
        raise JobError(f"execution config {config_name!r} shares no workspace: {exc}") from None
    except OSError as exc:
        raise JobError(f"cannot copy the working folder {folder} for the job: {exc}") from None
    files[ARCHIVE] = snap.archive
    files[INFO] = json.dumps({"path": snap.folder}).encode()
    return dataclasses.replace(snap, archive=b"", read_only=plan.read_only)  # sent: let go


def notice(snap: snapshot.Snapshot, config_name: str) -> str:
    """What the job's output says first: it runs on a copy, and what comes back."""
    back = (
        "nothing it writes there is copied back (the config's workspace is read-only)"
        if snap.read_only
        else "the files it creates or changes there are copied back when it ends, unless "
        "changed here meanwhile"
    )
    return (
        f"dss-containers: execution config {config_name!r} shares no workspace with the "
        f"server: the job runs on a copy of {snap.folder} ({len(snap.digests)} files, "
        f"{format_size(snap.size)}); {back}.\n"
    )


async def copy_back(
    job: Job, backend: Backend, workload_id: str, snap: snapshot.Snapshot | None, limit: int
) -> list[str]:
    """Write back what the finished job created or changed in its copy (if it had one);
    the lines that say what happened (for the job's output)."""
    if snap is None:
        return []
    folder = snap.folder
    try:
        found = await backend.read_files(workload_id, BACK, limit=limit)
    except FilesTooLarge:
        found = None
    except BackendError as exc:
        return [f"dss-containers: the job's files under {folder} could not be read back: {exc}"]
    if found is None or sum(len(data) for data in found.values()) > limit:
        return [
            f"dss-containers: the files job {job.id} wrote under {folder} are over "
            f"{format_size(limit)} (JobService.snapshot_return_limit): none was copied back"
        ]
    prefix = BACK.rsplit("/", 1)[1] + "/"
    outputs = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
    if not outputs:
        return []
    if snap.read_only:
        return [
            f"dss-containers: NOT copied back (the config's workspace is read-only): "
            f"{', '.join(sorted(outputs))}"
        ]
    result = await asyncio.to_thread(snapshot.write_back, snap, outputs)
    lines = []
    if result.written:
        lines.append(f"dss-containers: copied back to {folder}: {', '.join(result.written)}")
    if result.conflicts:
        lines.append(
            f"dss-containers: NOT copied back, changed in {folder} since the job took its "
            f"copy (the server's version is kept, the job's is dropped): "
            f"{', '.join(result.conflicts)}"
        )
    if result.refused:
        names = ", ".join(repr(r) for r in result.refused)
        lines.append(f"dss-containers: NOT copied back, not a plain file inside {folder}: {names}")
    return lines
