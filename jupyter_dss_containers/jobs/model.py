"""What a job is: a request (what to run, where) and its record (state, logs, result)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, STARTING, RUNNING)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

#: what a job runs: Python code, R code, a model operation or a plugin recipe
KINDS = ("python", "r", "model", "recipe")


class JobError(RuntimeError):
    """A job could not run or did not finish; the message says why."""


class JobNotFound(JobError, KeyError):
    """No job by that id in this service."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class RemoteError(JobError):
    """The job's code raised in the container; carries the remote traceback."""

    def __init__(self, ename: str, evalue: str, traceback: str, job_id: str = ""):
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue, self.traceback, self.job_id = ename, evalue, traceback, job_id

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of the (useless) local traceback of the magic."""
        header = f"Remote traceback (job {self.job_id}, in the container):"
        return [header, *self.traceback.rstrip("\n").splitlines()]


@dataclass
class JobRequest:
    """What to run and where; the payload travels into the container as a private file."""

    config: str
    kind: str
    code: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    code_env: str | None = None
    #: model jobs: the operation and its arguments; recipes: name and parameters
    operation: dict[str, Any] = field(default_factory=dict)
    #: extra files for the container (absolute path -> bytes), e.g. a plugin's sources
    files: dict[str, bytes] = field(default_factory=dict)
    name: str = ""


@dataclass
class Job:
    """One job's record in the service that runs it."""

    id: str
    request: JobRequest
    owner: str
    image: str
    state: str = QUEUED
    message: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    workload_id: str | None = None
    exit_code: int | None = None
    #: ("stdout" | "stderr", text) chunks in arrival order
    output: list[tuple[str, str]] = field(default_factory=list)
    result: Any = None
    error: JobError | None = None

    @property
    def config(self) -> str:
        return self.request.config

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def logs(self) -> str:
        return "".join(text for _, text in self.output)

    def summary(self) -> dict[str, Any]:
        """A JSON-able row for listings (CLI, REST, ``%container_jobs``)."""
        return {
            "id": self.id,
            "name": self.request.name or self.request.kind,
            "kind": self.request.kind,
            "config": self.config,
            "code_env": self.request.code_env,
            "owner": self.owner,
            "image": self.image,
            "state": self.state,
            "message": self.message,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "exit_code": self.exit_code,
        }
