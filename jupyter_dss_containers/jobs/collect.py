"""Reading back what a job's container left, as data only.

The files come from the job owner's code, so they are bounded before they are kept and
checked before they are believed: the result document is parsed as JSON and checked field
by field (:mod:`.results`), the Python values and R tables are kept as bytes. Nothing
here deserializes a pickle or runs anything the job wrote.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..backends import Backend, BackendError, ImageMissing
from ..backends.base import FilesTooLarge, WorkloadStatus
from ..config import format_size
from . import results, rlang
from .model import Job, JobError, RemoteError
from .results import BadResult, JobResult

JOB_DIR = rlang.JOB_DIR


async def read_result(
    backend: Backend, workload_id: str, job: Job, exit_code: int | None, limits: dict[str, int]
) -> JobResult | None:
    """The succeeded job's result; raises the job's error (a :class:`RemoteError` when its
    code raised); None when it left no result (it died: the caller says how).

    ``limits``: ``{"max_result_bytes": ..., "max_values_bytes": ...}`` (the service's
    traits, named in refusals).
    """
    if job.request.kind == "r":
        found = await _read(backend, workload_id, "error.txt", limits, "max_result_bytes")
        if exit_code != 0 and "error.txt" not in found:
            return None
        found.update(await _read(backend, workload_id, "out", limits, "max_values_bytes"))
        return rlang.r_outcome(found, job.request.outputs, job.id)
    name = results.RESULT_FILE
    found = await _read(backend, workload_id, name, limits, "max_result_bytes")
    if name not in found:
        return None
    try:
        document = results.parse_document(found[name], limits["max_result_bytes"])
    except BadResult as exc:
        where = f"{JOB_DIR}/{name}"
        raise JobError(f"job {job.id}: its result document ({where}) is not valid: {exc}") from None
    if not document["ok"]:
        evalue = document["evalue"]
        if document.get("missing_module"):
            evalue += f" (image {job.image}, execution config {job.config!r})"
        raise RemoteError(document["ename"], evalue, document["traceback"], job.id)
    values = results.VALUES_FILE
    kept = await _read(backend, workload_id, values, limits, "max_values_bytes")
    return JobResult(document, kept.get(values))


async def _read(
    backend: Backend, workload_id: str, name: str, limits: dict[str, int], trait: str
) -> dict[str, bytes]:
    """``name`` (a file or folder of the job folder) as bytes, keyed relative to the job
    folder; more than the ``trait`` limit there fails the job, saying so."""
    limit = limits[trait]
    over = (
        f"the job left more than {format_size(limit)} in {JOB_DIR}/{name} "
        f"(the limit: JobService.{trait})"
    )
    found: dict[str, bytes] | None = None
    with contextlib.suppress(FilesTooLarge):  # the backend stops reading past the limit
        found = await backend.read_files(workload_id, f"{JOB_DIR}/{name}", limit=limit)
    # raised out here, not in the handler: the job's error keeps no traceback (nor buffer)
    if found is None or sum(len(data) for data in found.values()) > limit:
        raise JobError(over)
    return found


async def final_status(backend: Backend, workload_id: str) -> WorkloadStatus:
    """The final status (the log stream ends when the container exits, or just before)."""
    for _ in range(100):
        status = await backend.status(workload_id)
        if not status.running:
            return status
        await asyncio.sleep(0.05)
    return status


def death_message(job: Job, status: WorkloadStatus, tail_lines: int) -> str:
    """Why a job that left no result ended, with its last ``tail_lines`` log lines."""
    message = f"job {job.id} (config {job.config!r}) {status.reason or status.state}"
    tail = job.logs().splitlines()[-tail_lines:] if tail_lines > 0 else []
    if tail:
        message += "; last log lines:\n" + "\n".join(tail)
    return message


def backend_failure(job: Job, exc: BackendError) -> str:
    """A backend's refusal as the job's error (a missing image says how to build it)."""
    message = f"job {job.id}: execution config {job.config!r}: {exc}"
    if isinstance(exc, ImageMissing):
        env = job.request.code_env
        what = f"build-env {env} --config {job.config}" if env else "build-base-image"
        message += f"; build it with: jupyter dss-containers {what}"
    return message
