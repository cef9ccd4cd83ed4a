"""The job service: submit, queue fairly within per-user and per-config limits, run,
collect, clean up.

One service lives in each process that runs jobs (the kernel using the Python API or the
magics, or the Jupyter server). It speaks only the :class:`~..backends.Backend`
interface, checks permission with the same call as the kernel provisioner, and labels
every job container like a kernel's, so ``cleanup`` reaps what a dead process left.

It never deserializes what a job hands back (see :mod:`.results`): a result is a checked
JSON document plus opaque bytes, so a job cannot run code in the process of the service,
which may be the Jupyter server of many users. It does no file I/O on the event loop: the
job store is written by one :class:`.writer.StoreWriter` in a worker thread
(:mod:`.persistence`), and results are written and read in threads. Taking over the jobs of
a process that is gone lives in :mod:`.recovery`; runners started ahead of time for
configs with ``warm_pool: {jobs: N}`` in :mod:`.pool`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable
from typing import Any

from traitlets import Bool, Float, Integer, Type, Unicode
from traitlets.config import LoggingConfigurable

from .. import ownership, phases, transport
from ..backends import Backend, BackendError, backend_for
from ..backends.base import WorkloadSpec
from ..config import ExecutionConfig, load_config
from ..permissions import Identity, check_permission, current_identity
from ..workspace import WorkspacePlan
from . import queueing, rlang, workdir
from .collect import backend_failure, death_message, final_status, read_result
from .hostread import FolderReader
from .model import (
    ACTIVE_STATES,
    CANCELLED,
    FAILED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    STARTING,
    SUCCEEDED,
    Job,
    JobError,
    JobNotFound,
    JobRequest,
)
from .payload import image_for, job_files
from .persistence import Persistence
from .pool import JobPool, cold_folder, start_pooled
from .recovery import Recovery
from .results import JobResult
from .snapshot import SECRET_LIMIT, SNAPSHOT_LIMIT, Snapshot
from .store import JobStore
from .writer import StoreWriter

JOB_DIR = rlang.JOB_DIR


class JobService(Recovery, Persistence, LoggingConfigurable):
    """Runs jobs in containers from execution configs, a few at a time per user and config."""

    config_file = Unicode(
        None, allow_none=True, config=True, help="Config file (default: the usual search)."
    )
    max_jobs_per_user = Integer(
        4, config=True, help="Jobs one user may run at once; more wait in the queue."
    )
    max_jobs_per_config = Integer(
        8, config=True, help="Jobs one execution config may run at once; more wait."
    )
    max_queued_jobs_per_user = Integer(
        50, config=True, help="Jobs one user may have waiting in the queue; more are refused."
    )
    max_payload_bytes = Integer(
        512 * 1024 * 1024, config=True, help="Largest payload (code and inputs) sent to a job."
    )
    max_result_bytes = Integer(
        32 * 1024 * 1024,
        config=True,
        help="Largest result document (JSON: displays, metrics, the error) a job may hand "
        "back; a bigger one fails the job.",
    )
    max_values_bytes = Integer(
        512 * 1024 * 1024,
        config=True,
        help="Largest Python values (cloudpickled --out variables, model, predictions) or R "
        "output tables a job may hand back; they are kept as bytes, never loaded here.",
    )
    max_output_bytes = Integer(
        8 * 1024 * 1024,
        config=True,
        help="Bytes of a job's output (its log) kept in memory and in the job store: past "
        "it, the head is dropped and a marker line says how much.",
    )
    keep_finished = Integer(200, config=True, help="Finished jobs remembered for listings.")
    stop_grace_seconds = Float(
        2.0,
        config=True,
        help="Seconds a cancelled job (on request, or because this process stops) has "
        "between SIGTERM and being killed and removed, to run its cleanup (finally "
        "blocks); 0: killed and removed at once.",
    )
    log_tail_lines = Integer(20, config=True, help="Log lines quoted when a job dies.")
    python = Unicode("python3", config=True, help="The Python that runs jobs in the image.")
    mount_cwd = Bool(
        True,
        config=True,
        help="Jobs see the submitting process's working folder (the notebook's, when a "
        "kernel submits them) at the same path, and start there (the config's workspace "
        "section applies). The server's own service turns it off: its REST jobs mount nothing.",
    )
    snapshot_limit = Integer(
        SNAPSHOT_LIMIT,
        config=True,
        help="Where the config shares no workspace, the most bytes of the working folder a "
        "job takes a copy of (more: refused; see jobs/workdir.py); 0: no copy.",
    )
    snapshot_return_limit = Integer(
        16 * 1024 * 1024,
        config=True,
        help="Most bytes of files created or changed in that copy written back at the end.",
    )
    take_over_interval = Float(
        5.0,
        config=True,
        help="Seconds between attempts to take over a stored job whose daemon or cluster "
        "could not be reached when this process started.",
    )
    pool_ready_timeout = Float(
        60.0,
        config=True,
        help="Seconds a pooled job runner (warm_pool: {jobs: N}) may take to wait for its "
        "payload; one that does not is removed and the failure logged.",
    )
    store_dir = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Folder that keeps job records, logs and results on disk, so a restarted "
        "process lists its jobs, takes over those still running and collects those that "
        "finished meanwhile (None: memory only).",
    )
    store_class = Type(
        JobStore,
        klass=JobStore,
        config=True,
        help="The job store's class, built with store_dir (a JobStore subclass: records "
        "kept elsewhere, or writes observed).",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._jobs: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backends: dict[str, Backend] = {}
        self._changed: asyncio.Condition | None = None
        self._store: JobStore | None = None
        self._writer: StoreWriter | None = None
        self._submitted: set[str] = set()  # jobs submitted here (not taken over)
        self._plans: dict[str, WorkspacePlan] = {}  # until each job's workload is made
        self._logged: dict[str, int] = {}  # bytes of each job's output in the store
        self._snapshots: dict[str, Snapshot] = {}  # copies of the working folder, by job
        self._folders: dict[str, str] = {}  # pooled jobs' folders on this host, by job
        self.job_pool = JobPool(self.log, self.python, self.pool_ready_timeout)

    # ------------------------------------------------------------------ public

    async def submit(self, request: JobRequest, identity: Identity | None = None) -> Job:
        """Check permission, prepare the payload and queue the job; returns at once."""
        config_file = await asyncio.to_thread(load_config, self.config_file)
        try:
            config = config_file.get(request.config)
        except KeyError as exc:
            raise JobError(exc.args[0]) from None
        identity = identity or current_identity(config_file)
        check_permission(identity, config)  # before anything is built, sent or started
        self._check_queue(identity.username)
        image = await asyncio.to_thread(image_for, config_file, config, request.code_env)
        # a pod's job folder is a read-only Secret, and its files come back in its log
        framed = config.backend == "kubernetes"
        files, command = await asyncio.to_thread(
            job_files, request, framed, self.python, self.max_payload_bytes
        )
        plan = await workdir.plan(config, identity.username, self.mount_cwd)
        room = SECRET_LIMIT - 1024 if framed else self.max_payload_bytes  # 1 KiB: the token
        snap = await workdir.prepare(plan, request, config.name, files, self.snapshot_limit, room)
        self._check_queue(identity.username)  # again: others may have queued meanwhile
        job = Job(id=uuid.uuid4().hex[:12], request=request, owner=identity.username, image=image)
        job.message = self._wait_reason(job) or ""
        self._jobs[job.id] = job
        self._submitted.add(job.id)
        self._backends[job.id] = backend_for(config)
        self._plans[job.id] = plan
        if snap is not None:
            self._snapshots[job.id] = snap
            job.output.append(("stderr", workdir.notice(snap, config.name)))
        elif plan.notice:
            job.output.append(("stderr", plan.notice + "\n"))
        self._save(job)
        phases.BOARD.begin(job.id, phases.QUEUED, "waiting for a slot (per-user limits)")
        self._tasks[job.id] = asyncio.create_task(self._run(job, config, files, command))
        self._forget_old()
        return job

    def submitted_here(self, job_id: str) -> bool:
        """Whether this service submitted the job (rather than took it over from a store):
        only such jobs' Python values may be loaded, by the kernel that submitted them."""
        return job_id in self._submitted

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(f"no job {job_id!r} in this process") from None

    def list(self, owner: str | None = None) -> list[Job]:
        return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    async def wait(self, job_id: str) -> Job:
        """The job once it is done and nothing of it is left (a take-over that waited for
        its daemon hands on to the task that follows the job: wait for that one too)."""
        job = self.get(job_id)
        while (task := self._tasks.get(job_id)) is not None and not task.done():
            await asyncio.shield(task)
        return job

    async def result(self, job_id: str, values: bool = True) -> JobResult | None:
        """The finished job's result as data (its Python values stay opaque bytes: see
        ``jobs.api`` to load them; ``values=False``: the document only, e.g. for the REST
        API, without reading the values from the store); raises its error, or says it is
        not done."""
        job = self.get(job_id)
        if not job.done:
            raise JobError(f"job {job_id} is {job.state}: no result yet")
        if job.error is not None:
            raise job.error
        if job.result is None and self.store is not None:  # kept in the store only
            return await asyncio.to_thread(
                self.store.load_result, job.id, self.max_result_bytes, values
            )
        return job.result

    async def cancel(self, job_id: str) -> Job:
        """Stop the job (SIGTERM, then after ``stop_grace_seconds`` kill) and remove its
        container; returns once nothing of it is left, its last output collected."""
        job = self.get(job_id)
        if job.done:
            return job
        job.state, job.message, job.finished = CANCELLED, "cancelled on request", time.time()
        job.error = JobError(f"job {job_id} was cancelled")
        self._save(job)
        await self._notify()  # a queued job leaves the queue
        backend = self._backends.get(job_id)
        if job.workload_id and backend is not None:
            stopped = False
            if self.stop_grace_seconds > 0:
                with contextlib.suppress(BackendError):  # then removed at once, below
                    await backend.stop(job.workload_id, self.stop_grace_seconds)
                    stopped = True
            if not stopped:
                await backend.remove(job.workload_id)
        task = self._tasks.get(job_id)
        if task is not None:  # it reads the output written during the grace, then removes
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout=30)
        if job.workload_id and backend is not None:
            await backend.remove(job.workload_id)
        return job

    async def shutdown(self) -> None:
        """Cancel every active job at once (the process is going away: no waiting on
        tasks; each job gets the same grace at the same time), then flush the store."""
        active = [j for j in self._jobs.values() if not j.done]
        for job in active:
            job.state, job.finished = CANCELLED, time.time()
            job.message = "cancelled: the process that ran it stopped"
            job.error = JobError(f"job {job.id} was cancelled: the process that ran it stopped")
            self._save(job)
        stops = [
            self._stop(self._backends[j.id], j.workload_id)
            for j in active
            if j.workload_id and j.id in self._backends  # not one still waiting for a daemon
        ]
        await asyncio.gather(*stops, return_exceptions=True)
        for folder in [self._folders.pop(j.id, "") for j in active]:
            await asyncio.to_thread(transport.remove_folder, folder)  # pooled jobs' ones
        await self.job_pool.stop()
        await self._notify()
        if self.writer is not None:
            await self.writer.flush()

    async def _stop(self, backend: Backend, workload_id: str) -> None:
        """SIGTERM, at most ``stop_grace_seconds`` for the job to clean up, then removal
        (a grace of 0: removed at once, SIGKILL)."""
        try:
            if self.stop_grace_seconds > 0:
                await backend.stop(workload_id, self.stop_grace_seconds)
        finally:
            await backend.remove(workload_id)

    # ------------------------------------------------------------------ queueing

    def _check_queue(self, owner: str) -> None:
        queueing.check_queue(owner, self._jobs.values(), self.max_queued_jobs_per_user)

    def _wait_reason(self, job: Job) -> str | None:
        """Why the job must wait for a slot, or None when it may start now (see
        :func:`.queueing.wait_reason`)."""
        return queueing.wait_reason(
            job, list(self._jobs.values()), self.max_jobs_per_user, self.max_jobs_per_config
        )

    async def _acquire(self, job: Job) -> bool:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while job.state == QUEUED:
                reason = self._wait_reason(job)
                if reason is None:
                    job.state, job.message, job.started = STARTING, "", time.time()
                    self._save(job)
                    self._changed.notify_all()  # the owner's next job may now be first
                    return True
                job.message = reason
                phases.BOARD.enter(job.id, phases.QUEUED, reason)
                await self._changed.wait()
        return False  # cancelled while queued

    async def _notify(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ running

    async def _run(
        self, job: Job, config: ExecutionConfig, files: dict[str, bytes], command: list[str]
    ) -> None:
        backend = self._backends[job.id]

        async def start_and_follow() -> None:
            if await self._acquire(job):
                await self._execute(job, backend, config, files, command)

        await self._guarded(job, backend, start_and_follow())

    async def _guarded(self, job: Job, backend: Backend, work: Awaitable[None]) -> None:
        """Run a job's ``work`` (start and follow it, or follow a taken-over one) so that
        however it ends, the job is settled and its container gone."""
        try:
            await work
        except JobError as exc:
            self._finish(job, FAILED, exc)
        except BackendError as exc:
            self._finish(
                job, FAILED, JobError(phases.BOARD.failed(job.id, backend_failure(job, exc)))
            )
        except Exception as exc:  # never lose a job silently
            self.log.exception("job %s failed unexpectedly", job.id)
            self._finish(job, FAILED, JobError(f"job {job.id}: {type(exc).__name__}: {exc}"))
        finally:
            if job.workload_id:
                with contextlib.suppress(BackendError):
                    await backend.remove(job.workload_id)
                ownership.this_process().release(job.workload_id)
            if folder := self._folders.pop(job.id, None):  # a pooled runner's: used once
                await asyncio.to_thread(transport.remove_folder, folder)
            self._snapshots.pop(job.id, None)
            if not job.done:  # cancelled while starting
                self._finish(job, CANCELLED, JobError(f"job {job.id} was cancelled"))
            await self._notify()
            self._forget_old()  # the store stays within keep_finished as jobs end

    async def _execute(
        self,
        job: Job,
        backend: Backend,
        config: ExecutionConfig,
        files: dict[str, bytes],
        command: list[str],
    ) -> None:
        req = job.request
        env = {**config.env, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        ownership.this_process().register()
        if self.writer is not None:  # no container before its job's record is on disk
            await self.writer.flush()
        snap = self._snapshots.get(job.id)
        spec = WorkloadSpec(
            name=f"dss-job-{job.id}",
            image=job.image,
            command=command,
            labels=ownership.workload_labels(
                "job", config.name, job.owner, job_id=job.id, code_env=req.code_env
            ),
            env=env,
            files=files,
            workspace=self._plans.pop(job.id, None),
            scratch_dirs=(snap.folder,) if snap is not None else (),
        )
        pooled = await start_pooled(self.job_pool, backend, config, job, spec)
        if pooled is not None:
            workload, self._folders[job.id] = pooled
        else:
            if folder := await cold_folder(backend, config, spec):
                self._folders[job.id] = folder  # removed with the job, as a runner's
            workload = await backend.create(spec)
        job.workload_id = workload.id
        phases.BOARD.enter(job.id, phases.READY, f"the job runs in {workload.name}")
        if job.state == CANCELLED:  # cancelled while the container was being created
            await backend.remove(workload.id)
            return
        job.state = RUNNING
        self._save(job)
        how = "pooled" if pooled else "new"
        name = workload.name
        self.log.info("job %s runs in %s container %s (%r)", job.id, how, name, config.name)
        try:
            await self._collect(job, backend, workload.id)
        finally:  # after the job: a refill would take the CPU it runs on
            if pooled is not None:
                self.job_pool.refill(config, job.image, backend)

    async def _collect(self, job: Job, backend: Backend, workload_id: str) -> None:
        """Follow the container's log to its end, then read the result it left (as data:
        nothing the job wrote is deserialized or run here)."""
        async for stream, text in backend.follow_logs(workload_id):
            self._add_output(job, stream, text)
        status = await final_status(backend, workload_id)
        job.exit_code = status.exit_code
        if job.state == CANCELLED:
            return
        snap, limit = self._snapshots.pop(job.id, None), self.snapshot_return_limit
        for line in await workdir.copy_back(job, backend, workload_id, snap, limit):
            self._add_output(job, "stderr", line + "\n")  # first: a job that raised wrote some
        limits = {"max_result_bytes": self.max_result_bytes}
        limits["max_values_bytes"] = self.max_values_bytes
        folder = self._folders.get(job.id)
        reader = FolderReader(backend, folder) if folder else backend  # (as data, too)
        try:
            result = await read_result(reader, workload_id, job, status.exit_code, limits)
        finally:  # gone before the job says it ended: a finished job has nothing left
            with contextlib.suppress(BackendError):
                await backend.remove(workload_id)
        if result is None:
            raise JobError(death_message(job, status, self.log_tail_lines))
        await self._succeeded(job, result)

    def _add_output(self, job: Job, stream: str, text: str) -> None:
        """Keep a chunk of output (the tail, within ``max_output_bytes``); the store keeps
        the head up to the same bound while the job runs, and the kept tail once it ends."""
        job.add_output(stream, text, self.max_output_bytes)
        logged = self._logged.get(job.id, 0)
        if logged <= self.max_output_bytes and self.writer is not None:
            self._logged[job.id] = logged + len(text.encode("utf-8", "replace"))
            self.writer.append(job.id, [(stream, text)])

    async def _succeeded(self, job: Job, result: JobResult) -> None:
        job.result = result
        if await self._keep_result(job, result):  # in the store: no copy stays in memory
            job.result = None
        self._finish(job, SUCCEEDED)

    def _finish(self, job: Job, state: str, error: JobError | None = None) -> None:
        if job.done and state != CANCELLED and job.state == CANCELLED:
            return
        job.state, job.finished = state, time.time()
        if error is not None:
            job.error = error
            job.message = str(error).splitlines()[0][:300]
        elif state == SUCCEEDED:
            job.message = ""
        phases.BOARD.failed(job.id, job.message or state)  # a start that never got to run
        self._save(job)
        over = self._logged.pop(job.id, 0) > self.max_output_bytes or job.dropped_bytes
        if over and self.writer is not None:  # the store kept the head: keep the tail
            self.writer.replace(job.id, list(job.output))

    def _forget_old(self) -> None:
        """Forget (in memory and in the store) the jobs that finished first, past
        ``keep_finished``: a long job that just ended is not the first to go."""
        finished = [j for j in self._jobs.values() if j.state in FINAL_STATES]
        finished.sort(key=lambda j: j.finished or j.created)
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            self._jobs.pop(job.id, None)
            self._tasks.pop(job.id, None)
            self._backends.pop(job.id, None)
            self._submitted.discard(job.id)
            if self.writer is not None:
                self.writer.remove(job.id)


__all__ = ["ACTIVE_STATES", "JobService"]
