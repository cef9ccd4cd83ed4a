"""The job service: submit, queue fairly within per-user and per-config limits, run,
collect, clean up.

One service lives in each process that runs jobs (the kernel using the Python API or the
magics, or the Jupyter server). It speaks only the :class:`~..backends.Backend`
interface, checks permission with the same call as the kernel provisioner, and labels
every job container like a kernel's, so ``cleanup`` reaps what a dead process left.

It never deserializes what a job hands back (see :mod:`.results`): a result is a checked
JSON document plus opaque bytes, so a job cannot run code in the process of the service,
which may be the Jupyter server of many users.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .. import images, ownership
from ..backends import Backend, BackendError, BackendUnavailable, ImageMissing, backend_for
from ..backends.base import WorkloadSpec, WorkloadStatus
from ..config import ConfigFile, ExecutionConfig, load_config
from ..permissions import Identity, check_permission, current_identity
from ..workspace import WorkspaceError, WorkspacePlan, resolve_plan
from . import queueing, rlang
from .collect import read_result
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
    JobQueueFull,
    JobRequest,
)
from .payload import job_files
from .results import JobResult
from .store import JobStore

JOB_DIR = rlang.JOB_DIR


class JobService(LoggingConfigurable):
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
    stop_grace_seconds = Float(2.0, config=True, help="Seconds between SIGTERM and removal.")
    log_tail_lines = Integer(20, config=True, help="Log lines quoted when a job dies.")
    python = Unicode("python3", config=True, help="The Python that runs jobs in the image.")
    mount_cwd = Bool(
        True,
        config=True,
        help="Jobs see the submitting process's working folder (the notebook's, when a "
        "kernel submits them) at the same path, and start there (the config's workspace "
        "section applies). The server's own service turns it off: its REST jobs mount nothing.",
    )
    take_over_interval = Float(
        5.0,
        config=True,
        help="Seconds between attempts to take over a stored job whose daemon or cluster "
        "could not be reached when this process started.",
    )
    store_dir = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Folder that keeps job records, logs and results on disk, so a restarted "
        "process lists its jobs, takes over those still running and collects those that "
        "finished meanwhile (None: memory only).",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._jobs: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backends: dict[str, Backend] = {}
        self._changed: asyncio.Condition | None = None
        self._store: JobStore | None = None
        self._submitted: set[str] = set()  # jobs submitted here (not taken over)
        self._plans: dict[str, WorkspacePlan] = {}  # until each job's workload is made
        self._logged: dict[str, int] = {}  # bytes of each job's output in the store

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
        image = await asyncio.to_thread(_image_for, config_file, config, request.code_env)
        # a pod's job folder is a read-only Secret, and its files come back in its log
        framed = config.backend == "kubernetes"
        files, command = await asyncio.to_thread(
            job_files, request, framed, self.python, self.max_payload_bytes
        )
        plan = await self._workspace(config, identity.username)
        self._check_queue(identity.username)  # again: others may have queued meanwhile
        job = Job(id=uuid.uuid4().hex[:12], request=request, owner=identity.username, image=image)
        job.message = self._wait_reason(job) or ""
        self._jobs[job.id] = job
        self._submitted.add(job.id)
        self._backends[job.id] = backend_for(config)
        self._plans[job.id] = plan
        if plan.notice:
            job.output.append(("stderr", plan.notice + "\n"))
        self._save(job)
        self._tasks[job.id] = asyncio.create_task(self._run(job, config, files, command))
        self._forget_old()
        return job

    async def _workspace(self, config: ExecutionConfig, user: str) -> WorkspacePlan:
        """The submitting process's working folder at the same path in the job (the
        notebook's, when a kernel submits), or nothing (``mount_cwd`` off: the server)."""
        if not self.mount_cwd:
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
        """Stop the job and remove its container; returns once nothing of it is left."""
        job = self.get(job_id)
        if job.done:
            return job
        job.state, job.message, job.finished = CANCELLED, "cancelled on request", time.time()
        job.error = JobError(f"job {job_id} was cancelled")
        self._save(job)
        if job.workload_id and job_id in self._backends:
            await self._backends[job_id].remove(job.workload_id)
        await self._notify()
        task = self._tasks.get(job_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=30)
        return job

    async def shutdown(self) -> None:
        """Cancel every active job at once (the process is going away: no waiting on tasks)."""
        active = [j for j in self._jobs.values() if not j.done]
        for job in active:
            job.state, job.finished = CANCELLED, time.time()
            job.message = "cancelled: the process that ran it stopped"
            job.error = JobError(f"job {job.id} was cancelled: the process that ran it stopped")
            self._save(job)
        removals = [
            self._backends[j.id].remove(j.workload_id)
            for j in active
            if j.workload_id and j.id in self._backends  # not one still waiting for a daemon
        ]
        await asyncio.gather(*removals, return_exceptions=True)
        await self._notify()

    # ------------------------------------------------------------------ queueing

    def _check_queue(self, owner: str) -> None:
        queued = sum(1 for j in self._jobs.values() if j.owner == owner and j.state == QUEUED)
        if queued >= self.max_queued_jobs_per_user:
            raise JobQueueFull(
                f"{owner} already has {queued} jobs queued (limit "
                f"{self.max_queued_jobs_per_user} per user, "
                "JobService.max_queued_jobs_per_user): wait for some to start, or cancel some"
            )

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
        try:
            if not await self._acquire(job):
                return
            await self._execute(job, backend, config, files, command)
        except JobError as exc:
            self._finish(job, FAILED, exc)
        except BackendError as exc:
            self._finish(job, FAILED, JobError(self._explain(job, exc)))
        except Exception as exc:  # never lose a job silently
            self.log.exception("job %s failed unexpectedly", job.id)
            self._finish(job, FAILED, JobError(f"job {job.id}: {type(exc).__name__}: {exc}"))
        finally:
            if job.workload_id:
                with contextlib.suppress(BackendError):
                    await backend.remove(job.workload_id)
                ownership.this_process().release(job.workload_id)
            if not job.done:  # cancelled while starting
                self._finish(job, CANCELLED, JobError(f"job {job.id} was cancelled"))
            await self._notify()

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
        )
        workload = await backend.create(spec)
        job.workload_id = workload.id
        if job.state == CANCELLED:  # cancelled while the container was being created
            await backend.remove(workload.id)
            return
        job.state = RUNNING
        self._save(job)
        self.log.info("job %s runs in container %s (config %r)", job.id, spec.name, config.name)
        await self._collect(job, backend, workload.id)

    async def _collect(self, job: Job, backend: Backend, workload_id: str) -> None:
        """Follow the container's log to its end, then read the result it left (as data:
        nothing the job wrote is deserialized or run here)."""
        async for stream, text in backend.follow_logs(workload_id):
            self._add_output(job, stream, text)
        status = await self._exited(backend, workload_id)
        job.exit_code = status.exit_code
        if job.state == CANCELLED:
            return
        limits = {"max_result_bytes": self.max_result_bytes}
        limits["max_values_bytes"] = self.max_values_bytes
        try:
            result = await read_result(backend, workload_id, job, status.exit_code, limits)
        finally:  # gone before the job says it ended: a finished job has nothing left
            with contextlib.suppress(BackendError):
                await backend.remove(workload_id)
        if result is None:
            raise JobError(await self._death_message(job, backend, status))
        await self._succeeded(job, result)

    def _add_output(self, job: Job, stream: str, text: str) -> None:
        """Keep a chunk of output (the tail, within ``max_output_bytes``); the store keeps
        the head up to the same bound while the job runs, and the kept tail once it ends."""
        job.add_output(stream, text, self.max_output_bytes)
        logged = self._logged.get(job.id, 0)
        if logged <= self.max_output_bytes:
            self._logged[job.id] = logged + len(text.encode("utf-8", "replace"))
            chunk = (stream, text)
            self._persist(job, "log", lambda store: store.append_output(job.id, [chunk]))

    async def _succeeded(self, job: Job, result: JobResult) -> None:
        job.result = result
        if await self._keep_result(job, result):  # in the store: no copy stays in memory
            job.result = None
        self._finish(job, SUCCEEDED)

    async def _exited(self, backend: Backend, workload_id: str) -> WorkloadStatus:
        """The final status (the log stream ends when the container exits, or just before)."""
        for _ in range(100):
            status = await backend.status(workload_id)
            if not status.running:
                return status
            await asyncio.sleep(0.05)
        return status

    async def _death_message(self, job: Job, backend: Backend, status: WorkloadStatus) -> str:
        message = f"job {job.id} (config {job.config!r}) {status.reason or status.state}"
        tail = job.logs().splitlines()[-self.log_tail_lines :]
        if tail:
            message += "; last log lines:\n" + "\n".join(tail)
        return message

    def _explain(self, job: Job, exc: BackendError) -> str:
        message = f"job {job.id}: execution config {job.config!r}: {exc}"
        if isinstance(exc, ImageMissing):
            env = job.request.code_env
            what = f"build-env {env} --config {job.config}" if env else "build-base-image"
            message += f"; build it with: jupyter dss-containers {what}"
        return message

    def _finish(self, job: Job, state: str, error: JobError | None = None) -> None:
        if job.done and state != CANCELLED and job.state == CANCELLED:
            return
        job.state, job.finished = state, time.time()
        if error is not None:
            job.error = error
            job.message = str(error).splitlines()[0][:300]
        elif state == SUCCEEDED:
            job.message = ""
        self._save(job)
        if self._logged.pop(job.id, 0) > self.max_output_bytes or job.dropped_bytes:
            kept = list(job.output)  # the store kept the head: keep the tail, as in memory
            self._persist(job, "log", lambda store: store.replace_output(job.id, kept))

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINAL_STATES]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            self._jobs.pop(job.id, None)
            self._tasks.pop(job.id, None)
            self._backends.pop(job.id, None)
            self._submitted.discard(job.id)
            if self.store is not None:
                self.store.remove(job.id)

    # ------------------------------------------------------------------ persistence

    @property
    def store(self) -> JobStore | None:
        if self._store is None and self.store_dir:
            self._store = JobStore(self.store_dir)
        return self._store

    def _persist(self, job: Job, what: str, write: Callable[[JobStore], None]) -> None:
        """Write to the store, if there is one; a failure (a full disk) is logged, and the
        job itself goes on."""
        if self.store is None:
            return
        try:
            write(self.store)
        except OSError as exc:
            self.log.warning("dss-containers: could not keep job %s's %s: %s", job.id, what, exc)

    def _save(self, job: Job) -> None:
        server_id = ownership.this_process().server_id
        self._persist(job, "record", lambda store: store.save(job, server_id))

    async def _keep_result(self, job: Job, result: JobResult) -> bool:
        """Write the result to the store (in a thread: values may be large); True when it
        is there."""
        if self.store is None:
            return False
        try:
            await asyncio.to_thread(self.store.save_result, job.id, result)
        except OSError as exc:
            self.log.warning("dss-containers: could not keep job %s's result: %s", job.id, exc)
            return False
        return True

    async def recover(self) -> list[Job]:
        """Load the stored jobs; take over the running jobs of processes that are gone.

        Call before reaping orphans: a taken-over job's container is adopted by this
        process, so the reaper leaves it. A job whose container still runs is followed
        again; one whose container exited while nobody watched is collected (its log and
        result read, then the container removed); one whose container is gone fails,
        saying so. Returns the jobs taken over.
        """
        if self.store is None:
            return []
        live_servers, _ = ownership.this_process().live_claims()
        config_file = await asyncio.to_thread(load_config, self.config_file)
        taken = []
        for job, server_id in await asyncio.to_thread(self.store.load_all):
            if job.id in self._jobs or (job.state in ACTIVE_STATES and server_id in live_servers):
                continue  # ours already, or a live process's
            self._jobs[job.id] = job  # listed at once; the take-overs below ask daemons
            if job.state in ACTIVE_STATES:
                taken.append(job)
        done = await asyncio.gather(*(self._take_over(job, config_file) for job in taken))
        for job, taken_over in zip(taken, done, strict=True):
            if not taken_over:  # its daemon is away (a host restarting?): keep asking
                self._tasks[job.id] = asyncio.create_task(self._take_over_later(job, config_file))
        self._forget_old()
        return taken

    async def _take_over(self, job: Job, config_file: ConfigFile) -> bool:
        """Adopt and follow the job's container, or settle the job; False when its daemon
        or cluster cannot be asked yet."""
        lost = "the process that ran it stopped"
        if job.done:  # cancelled while waiting
            return True
        if job.state == QUEUED:
            self._finish(job, CANCELLED, JobError(f"job {job.id} was cancelled: {lost} first"))
            return True
        try:
            backend = backend_for(config_file.get(job.config))
            found = await backend.list({ownership.MANAGED: "true", ownership.JOB_ID: job.id})
        except BackendUnavailable as exc:
            job.message = f"{lost}; waiting for its daemon to take it over: {exc}"[:300]
            return False
        except (KeyError, BackendError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) else exc
            self._finish(job, FAILED, JobError(f"job {job.id}: {lost}, and then: {why}"))
            return True
        if not found:
            message = f"job {job.id}: {lost}, and its container was removed meanwhile"
            self._finish(job, FAILED, JobError(message))
            return True
        workload = found[0]
        ownership.this_process().adopt(workload.id)
        job.workload_id, job.state = workload.id, RUNNING
        job.reset_output()  # the container's log is read again in full
        self._logged[job.id] = 0
        self._persist(job, "log", lambda store: store.replace_output(job.id, []))
        self._save(job)
        self._backends[job.id] = backend
        self.log.info("dss-containers: took over job %s (container %s)", job.id, workload.name)
        job.message = ""
        self._tasks[job.id] = asyncio.create_task(self._resume(job, backend))
        return True

    async def _take_over_later(self, job: Job, config_file: ConfigFile) -> None:
        """Ask the daemon again every ``take_over_interval`` until it answers."""
        while True:
            await asyncio.sleep(self.take_over_interval)
            if await self._take_over(job, config_file):
                return

    async def _resume(self, job: Job, backend: Backend) -> None:
        assert job.workload_id is not None
        try:
            await self._collect(job, backend, job.workload_id)
        except JobError as exc:
            self._finish(job, FAILED, exc)
        except BackendError as exc:
            self._finish(job, FAILED, JobError(self._explain(job, exc)))
        finally:
            with contextlib.suppress(BackendError):
                await backend.remove(job.workload_id)
            ownership.this_process().release(job.workload_id)
            await self._notify()


def _image_for(config_file: ConfigFile, config: ExecutionConfig, code_env: str | None) -> str:
    """The config's image, or the image of a code environment layered on it."""
    try:
        return images.resolve_image(config_file, config, code_env)
    except ValueError as exc:  # an unknown env, or one not available for the config
        raise JobError(str(exc)) from None


__all__ = ["ACTIVE_STATES", "JobService"]
