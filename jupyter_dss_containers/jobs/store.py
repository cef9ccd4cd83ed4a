"""Job records on disk, so a server that is killed and started again still knows its jobs.

One folder per job under the store's root (mode 0700): ``job.json`` (the record: state,
times, container, error; not the inputs, which may be large or private), ``output.jsonl``
(the log chunks, appended as they arrive, bounded like the log in memory) and a succeeded
job's result as data (``jobs/results.py``): ``result.json`` (the checked document, checked
again when read), ``values.pkl`` (the Python values as the container wrote them: opaque
bytes, never deserialized by the store or the server) and an R job's ``table.N.csv``. A
record also names the process that ran the job, so a restarted server takes over only
the jobs of processes that are gone. Nothing here is ever unpickled; a ``result.pkl`` left
by an older version is ignored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .model import Job, JobError, JobRequest, RemoteError
from .results import RESULT_FILE, VALUES_FILE, BadResult, JobResult, dump_document, parse_document

log = logging.getLogger(__name__)

RECORD, OUTPUT = "job.json", "output.jsonl"


class JobStore:
    """Reads and writes job records under one folder; every write is atomic."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        if not job_id.isalnum():  # ids are ours (hex); never let one name another path
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    # ------------------------------------------------------------------ writing

    def save(self, job: Job, server_id: str) -> None:
        """Write the job's record (not its output or result)."""
        self.save_record(job.id, job_record(job, server_id))

    def save_record(self, job_id: str, record: dict[str, Any]) -> None:
        """Write a record made by :func:`job_record` (taken on the event loop, written in a
        thread: the job may change meanwhile, the record does not)."""
        folder = self.folder(job_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        _write_atomic(folder / RECORD, json.dumps(record).encode())

    def append_output(self, job_id: str, chunks: list[tuple[str, str]]) -> None:
        with _private_open(self.folder(job_id) / OUTPUT, "a") as f:
            f.writelines(json.dumps(chunk) + "\n" for chunk in chunks)

    def replace_output(self, job_id: str, chunks: list[tuple[str, str]]) -> None:
        data = "".join(json.dumps(chunk) + "\n" for chunk in chunks)
        _write_atomic(self.folder(job_id) / OUTPUT, data.encode())

    def save_result(self, job_id: str, result: JobResult) -> None:
        """Write the result's bytes; the document last, as it marks the result complete."""
        folder = self.folder(job_id)
        if result.values is not None:
            _write_atomic(folder / VALUES_FILE, result.values)
        for i, name in enumerate(result.document.get("tables", [])):
            _write_atomic(folder / f"table.{i}.csv", result.tables[name])
        _write_atomic(folder / RESULT_FILE, dump_document(result.document))

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    # ------------------------------------------------------------------ reading

    def load_all(self) -> list[tuple[Job, str]]:
        """Every readable record as (job, id of the process that ran it), oldest first.

        A record that cannot be read is logged and left on disk for a human to look at.
        """
        found = []
        for entry in sorted(self.root.glob(f"*/{RECORD}")) if self.root.is_dir() else ():
            try:
                data = json.loads(entry.read_text())
                job = _job(data)
                job.output = self.load_output(job.id)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dss-containers: unreadable job record %s: %s", entry, exc)
                continue
            found.append((job, data.get("server_id", "")))
        return sorted(found, key=lambda pair: pair[0].created)

    def load_output(self, job_id: str) -> list[tuple[str, str]]:
        path = self.folder(job_id) / OUTPUT
        if not path.exists():
            return []
        chunks = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line cut short by a kill
                stream, text = json.loads(line)
                chunks.append((stream, text))
        return chunks

    def load_result(self, job_id: str, limit: int, values: bool = True) -> JobResult | None:
        """The stored result (its document checked again, at most ``limit`` bytes; with
        ``values``, its values and tables as bytes), or None when there is none or it does
        not check."""
        folder = self.folder(job_id)
        try:
            path = folder / RESULT_FILE
            if path.stat().st_size > limit:  # not even read
                raise BadResult(f"it is {path.stat().st_size} bytes, over the limit of {limit}")
            document = parse_document(path.read_bytes(), limit)
            if not values:
                return JobResult(document)
            values_file = folder / VALUES_FILE
            tables = {
                name: (folder / f"table.{i}.csv").read_bytes()
                for i, name in enumerate(document.get("tables", []))
            }
            kept = values_file.read_bytes() if values_file.exists() else None
            return JobResult(document, kept, tables)
        except FileNotFoundError:
            return None
        except (OSError, BadResult) as exc:
            log.warning("dss-containers: unreadable result of job %s: %s", job_id, exc)
            return None


def job_record(job: Job, server_id: str) -> dict[str, Any]:
    """The job's record as plain data (what ``job.json`` holds; not the inputs)."""
    req = job.request
    error = None
    if job.error is not None:
        error = {"message": str(job.error)}
        if isinstance(job.error, RemoteError):
            error.update(ename=job.error.ename, evalue=job.error.evalue)
            error["traceback"] = job.error.traceback
    return {
        "server_id": server_id,
        "id": job.id,
        "owner": job.owner,
        "image": job.image,
        "state": job.state,
        "message": job.message,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "workload_id": job.workload_id,
        "exit_code": job.exit_code,
        "request": {
            "config": req.config,
            "kind": req.kind,
            "code": req.code,
            "outputs": list(req.outputs),
            "code_env": req.code_env,
            "name": req.name,
        },
        "error": error,
    }


def _job(data: dict[str, Any]) -> Job:
    req = data["request"]
    request = JobRequest(
        config=req["config"],
        kind=req["kind"],
        code=req.get("code", ""),
        outputs=tuple(req.get("outputs", ())),
        code_env=req.get("code_env"),
        name=req.get("name", ""),
    )
    job = Job(id=data["id"], request=request, owner=data["owner"], image=data["image"])
    for key in ("state", "message", "created", "started", "finished", "workload_id"):
        setattr(job, key, data[key])
    job.exit_code = data.get("exit_code")
    error = data.get("error")
    if error and "ename" in error:
        job.error = RemoteError(error["ename"], error["evalue"], error["traceback"], job.id)
    elif error:
        job.error = JobError(error["message"])
    return job


def _private_open(path: Path, mode: str):
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    return os.fdopen(fd, mode)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with _private_open(tmp, "wb") as f:
        f.write(data)
    tmp.replace(path)
