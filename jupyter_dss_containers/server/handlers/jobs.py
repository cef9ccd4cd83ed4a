"""``GET|POST jobs``, ``GET|DELETE jobs/<id>``, ``GET jobs/<id>/logs``: the caller's own."""

from __future__ import annotations

from typing import Any

from tornado import web

from ...jobs.model import SUCCEEDED, Job, JobError, JobNotFound, JobQueueFull, JobRequest
from ...jobs.service import JobService
from ...permissions import Identity, PermissionDenied
from .base import DSSAPIHandler, api_error


def job_does_not_exist(job_id: str) -> str:
    """One text for a missing job and another user's: it tells nothing about the job."""
    shown = job_id if len(job_id) <= 64 and job_id.isascii() and job_id.isprintable() else None
    return f"Job does not exist: {shown}" if shown else "Job does not exist"


def job_row(job: Job) -> dict[str, Any]:
    """A job as the API shows it: its summary, with its error as text and traceback."""
    row = job.summary()
    row["error"] = str(job.error) if job.error is not None else None
    row["traceback"] = getattr(job.error, "traceback", None)
    return row


class _JobRoute(DSSAPIHandler):
    """The extension's job service; a caller sees only their own jobs."""

    @property
    def service(self) -> JobService:
        return self.settings["dss_containers"].job_service

    def job_of(self, identity: Identity, job_id: str) -> Job:
        try:
            job = self.service.get(job_id)
        except JobNotFound:
            job = None
        if job is None or job.owner != identity.username:
            raise api_error(404, job_does_not_exist(job_id))  # missing and not yours alike
        return job


class JobsHandler(_JobRoute):
    @web.authenticated
    async def get(self) -> None:
        _, identity = await self.caller()
        self.send({"jobs": [job_row(j) for j in self.service.list(owner=identity.username)]})

    @web.authenticated
    async def post(self) -> None:
        """Submit Python or R code (no inputs: those travel from the Python API)."""
        config_file, identity = await self.caller()
        body = self.json_body(("config", "code", "lang", "code_env", "name"))
        for key in ("config", "code"):
            if not isinstance(body.get(key), str) or not body[key]:
                raise api_error(400, f"{key!r} must be a non-empty string")
        lang = body.get("lang", "python")
        if lang not in ("python", "r"):
            raise api_error(400, f"'lang' must be 'python' or 'r', not {lang!r}")
        for key in ("code_env", "name"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise api_error(400, f"{key!r} must be a string")
        self.permitted_config(config_file, identity, body["config"])
        request = JobRequest(
            config=body["config"],
            kind=lang,
            code=body["code"],
            code_env=body.get("code_env"),
            name=body.get("name") or "",
        )
        try:
            job = await self.service.submit(request, identity)
        except PermissionDenied as exc:
            raise api_error(403, str(exc)) from None
        except JobQueueFull as exc:
            raise api_error(429, str(exc)) from None
        except JobError as exc:
            raise api_error(400, str(exc)) from None
        self.send(job_row(job), status=201)


class JobHandler(_JobRoute):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        """The job, with the rich outputs (MIME bundles) it displayed and the plain fields
        of its result document once it succeeded: checked data only, nothing unpickled."""
        _, identity = await self.caller()
        job = self.job_of(identity, job_id)
        row = job_row(job)
        row["displays"] = row["result"] = None
        if job.state == SUCCEEDED:
            result = await self.service.result(job.id, values=False)
            if result is not None:
                row["displays"], row["result"] = result.displays, result.fields()
        self.send(row)

    @web.authenticated
    async def delete(self, job_id: str) -> None:
        _, identity = await self.caller()
        job = self.job_of(identity, job_id)
        self.send(job_row(await self.service.cancel(job.id)))


class JobLogsHandler(_JobRoute):
    @web.authenticated
    async def get(self, job_id: str) -> None:
        """Output chunks from ``?since=N`` on; poll with the returned ``next`` to follow."""
        _, identity = await self.caller()
        job = self.job_of(identity, job_id)
        since = self.get_query_argument("since", "0")
        if not (since.isascii() and since.isdigit() and len(since) <= 18):
            raise api_error(400, f"'since' must be a whole number, not {since[:40]!r}")
        chunks, upto = job.output_since(int(since))
        self.send(
            {
                "id": job.id,
                "state": job.state,
                "output": [{"stream": n, "text": t} for n, t in chunks],
                "next": max(upto, int(since)),
            }
        )
