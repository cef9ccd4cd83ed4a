"""What a job is: a request (what to run, where) and its record (state, logs, result)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .. import phases
from .results import JobResult

QUEUED, STARTING, RUNNING = "queued", "starting", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, STARTING, RUNNING)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

#: what a job runs: Python code, R code, a model operation or a plugin recipe
KINDS = ("python", "r", "model", "recipe")


#: what one kept chunk of output costs besides its text (a tuple and a str), in bytes
CHUNK_COST = 64


def _size(text: str) -> int:
    return len(text.encode("utf-8", "replace"))


class JobError(RuntimeError):
    """A job could not run or did not finish; the message says why."""


class JobQueueFull(JobError):
    """The user already has as many jobs queued as the service allows."""


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
    #: ("stdout" | "stderr", text) chunks in arrival order; once the head was dropped to
    #: keep it under its cap, the first chunk is a marker line saying how much
    output: list[tuple[str, str]] = field(default_factory=list)
    #: the index of ``output[0]`` among all chunks (pollers count from the first chunk)
    output_base: int = 0
    output_bytes: int = 0
    dropped_bytes: int = 0
    #: the checked result document and opaque values (None until it succeeded, or when it
    #: lives in the job store only)
    result: JobResult | None = None
    error: JobError | None = None

    @property
    def config(self) -> str:
        return self.request.config

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    def add_output(self, stream: str, text: str, limit: int) -> None:
        """Append a chunk, then keep the output under ``limit`` bytes (each chunk counted
        with :data:`CHUNK_COST` of bookkeeping, so tiny chunks are bounded too): chunks are
        dropped from the head, a tenth more than needed at a time (so dropping costs O(1)
        per chunk on average), and the first chunk becomes a marker line saying how much
        was dropped; a chunk over the limit by itself keeps its end."""
        if not text:
            return
        self.output.append((stream, text))
        self.output_bytes += _size(text) + CHUNK_COST
        if self.output_bytes <= limit:
            return
        target = limit - limit // 10
        first = 1 if self.dropped_bytes else 0  # the marker stays first
        end, kept, dropped = first, self.output_bytes, 0
        while kept > target and end < len(self.output) - 1:
            size = _size(self.output[end][1])
            kept, dropped, end = kept - size - CHUNK_COST, dropped + size, end + 1
        if end > first:
            del self.output[first:end]
            self.output_bytes, self.dropped_bytes = kept, self.dropped_bytes + dropped
            if first:  # the marker moves up to the place of the last chunk it replaces
                self.output_base += end - first
            else:
                self.output.insert(0, ("stderr", ""))
                self.output_base += end - 1
        if self.output_bytes > limit:  # the one chunk left is too big by itself
            stream, text = self.output[-1]
            data = text.encode("utf-8", "replace")
            kept_text = data[len(data) - max(limit - CHUNK_COST, 0) :].decode("utf-8", "ignore")
            if not self.dropped_bytes:
                self.output.insert(0, ("stderr", ""))
            self.output[-1] = (stream, kept_text)
            self.output_bytes = _size(kept_text) + CHUNK_COST
            self.dropped_bytes += len(data) - _size(kept_text)
        self.output[0] = (
            "stderr",
            f"[dss-containers: {self.dropped_bytes} bytes of earlier output dropped "
            "(JobService.max_output_bytes)]\n",
        )

    def output_since(self, since: int) -> tuple[list[tuple[str, str]], int]:
        """The chunks from index ``since`` on and the next index. Indexes count from the
        first chunk ever, so a poller's position stays valid; one that fell behind the
        dropped head gets the marker line first."""
        chunks = self.output[max(since - self.output_base, 0) :]
        return chunks, self.output_base + len(self.output)

    def reset_output(self) -> None:
        self.output, self.output_base, self.output_bytes, self.dropped_bytes = [], 0, 0, 0

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
            # the start's phase, its message and history (see :mod:`..phases`)
            **phases.BOARD.fields(self.id),
        }
