"""The job service: submit, queue within per-user and per-config limits, run, collect, clean up.

One service lives in each process that runs jobs (the kernel using the Python API or the
magics, or the Jupyter server). It speaks only the :class:`~..backends.Backend`
interface, checks permission with the same call as the kernel provisioner, and labels
every job container like a kernel's, so ``cleanup`` reaps what a dead process left.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .. import images, ownership
from ..backends import Backend, BackendError, BackendUnavailable, ImageMissing, backend_for
from ..backends.base import WorkloadSpec, WorkloadStatus
from ..config import ConfigFile, ExecutionConfig, format_size, load_config
from ..permissions import Identity, check_permission, current_identity
from . import rlang
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
    RemoteError,
)
from .store import JobStore

JOB_DIR = rlang.JOB_DIR
RUNNER = Path(__file__).with_name("runner.py")


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
    max_payload_bytes = Integer(
        512 * 1024 * 1024, config=True, help="Largest payload (code and inputs) sent to a job."
    )
    keep_finished = Integer(200, config=True, help="Finished jobs remembered for listings.")
    stop_grace_seconds = Float(2.0, config=True, help="Seconds between SIGTERM and removal.")
    log_tail_lines = Integer(20, config=True, help="Log lines quoted when a job dies.")
    python = Unicode("python3", config=True, help="The Python that runs jobs in the image.")
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
        image = await asyncio.to_thread(_image_for, config_file, config, request.code_env)
        # a pod's job folder is a read-only Secret, and its files come back in its log
        framed = config.backend == "kubernetes"
        files, command = await asyncio.to_thread(self._prepare, request, framed)
        job = Job(id=uuid.uuid4().hex[:12], request=request, owner=identity.username, image=image)
        job.message = self._wait_reason(job) or ""
        self._jobs[job.id] = job
        self._backends[job.id] = backend_for(config)
        self._save(job)
        self._tasks[job.id] = asyncio.create_task(self._run(job, config, files, command))
        self._forget_old()
        return job

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

    async def result(self, job_id: str) -> Any:
        """The finished job's result; raises its error, or says it is not done."""
        job = self.get(job_id)
        if not job.done:
            raise JobError(f"job {job_id} is {job.state}: no result yet")
        if job.error is not None:
            raise job.error
        if job.result is None and self.store is not None:  # a job from before a restart
            data = await asyncio.to_thread(self.store.load_result, job.id)
            job.result = pickle.loads(data) if data else None  # our own store's bytes
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

    # ------------------------------------------------------------------ preparing

    def _prepare(
        self, request: JobRequest, framed: bool = False
    ) -> tuple[dict[str, bytes], list[str]]:
        if request.kind == "r" and framed:  # R writes elsewhere; the runner frames it to stdout
            out = rlang.WRITABLE_DIR
            files = rlang.r_files(request.code, request.inputs, request.outputs, out)
            files[f"{JOB_DIR}/runner.py"] = RUNNER.read_bytes()
            runner = [self.python, "-u", f"{JOB_DIR}/runner.py", "--frame", out, "--"]
            command = [*runner, *rlang.r_command()]
        elif request.kind == "r":
            files = rlang.r_files(request.code, request.inputs, request.outputs)
            command = rlang.r_command()
        else:
            import cloudpickle

            payload = {
                "kind": request.kind,
                "code": request.code,
                "inputs": request.inputs,
                "outputs": list(request.outputs),
                "operation": request.operation,
            }
            try:
                data = cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise JobError(f"the job's inputs cannot be pickled: {exc}") from None
            files = {f"{JOB_DIR}/payload.pkl": data, f"{JOB_DIR}/runner.py": RUNNER.read_bytes()}
            command = [self.python, "-u", f"{JOB_DIR}/runner.py"]
        files.update(request.files)
        size = sum(len(v) for v in files.values())
        if size > self.max_payload_bytes:
            raise JobError(
                f"the job's payload is {format_size(size)}, over the limit of "
                f"{format_size(self.max_payload_bytes)} (JobService.max_payload_bytes)"
            )
        return files, command

    # ------------------------------------------------------------------ queueing

    def _wait_reason(self, job: Job) -> str | None:
        """Why the job must wait for a slot, or None when it may start now."""
        running = [
            j for j in self._jobs.values() if j.state in (STARTING, RUNNING) and j is not job
        ]
        mine = sum(1 for j in running if j.owner == job.owner)
        if mine >= self.max_jobs_per_user:
            return (
                f"queued: {job.owner} already runs {mine} jobs "
                f"(limit {self.max_jobs_per_user} per user)"
            )
        here = sum(1 for j in running if j.config == job.config)
        if here >= self.max_jobs_per_config:
            return (
                f"queued: config {job.config!r} already runs {here} jobs "
                f"(limit {self.max_jobs_per_config} per config)"
            )
        # first come, first served: earlier queued jobs of the same user or config go first
        for other in self._jobs.values():
            if other is job:
                break
            if other.state == QUEUED and (other.owner == job.owner or other.config == job.config):
                return f"queued: behind job {other.id}"
        return None

    async def _acquire(self, job: Job) -> bool:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while job.state == QUEUED:
                reason = self._wait_reason(job)
                if reason is None:
                    job.state, job.message, job.started = STARTING, "", time.time()
                    self._save(job)
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
        """Follow the container's log to its end, then read the result it left."""
        req = job.request
        async for chunk in backend.follow_logs(workload_id):
            job.output.append(chunk)
            self._persist(job, "log", lambda store, c=chunk: store.append_output(job.id, [c]))
        status = await self._exited(backend, workload_id)
        job.exit_code = status.exit_code
        if job.state == CANCELLED:
            return
        if req.kind == "r":
            found = await backend.read_files(workload_id, JOB_DIR)
            if status.exit_code == 0 or ".dss-job/error.txt" in found:
                job.result = rlang.r_result(found, req.outputs, job.id)
                self._keep_result(job, pickle.dumps(job.result))
                self._finish(job, SUCCEEDED)
                return
        else:
            found = await backend.read_files(workload_id, f"{JOB_DIR}/result.pkl")
            if "result.pkl" in found:
                result = pickle.loads(found["result.pkl"])  # the user's own job's output
                if result.get("ok"):
                    job.result = result
                    self._keep_result(job, found["result.pkl"])
                    self._finish(job, SUCCEEDED)
                else:
                    self._finish(job, FAILED, self._remote_error(job, result))
                return
        raise JobError(await self._death_message(job, backend, status))

    async def _exited(self, backend: Backend, workload_id: str) -> WorkloadStatus:
        """The final status (the log stream ends when the container exits, or just before)."""
        for _ in range(100):
            status = await backend.status(workload_id)
            if not status.running:
                return status
            await asyncio.sleep(0.05)
        return status

    def _remote_error(self, job: Job, result: dict[str, Any]) -> RemoteError:
        evalue = result["evalue"]
        if result.get("missing_module"):
            evalue += f" (image {job.image}, execution config {job.config!r})"
        return RemoteError(result["ename"], evalue, result["traceback"], job.id)

    async def _death_message(self, job: Job, backend: Backend, status: WorkloadStatus) -> str:
        message = f"job {job.id} (config {job.config!r}) {status.reason or status.state}"
        tail = "".join(t for _, t in job.output).splitlines()[-self.log_tail_lines :]
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

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINAL_STATES]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            self._jobs.pop(job.id, None)
            self._tasks.pop(job.id, None)
            self._backends.pop(job.id, None)
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

    def _keep_result(self, job: Job, data: bytes) -> None:
        self._persist(job, "result", lambda store: store.save_result(job.id, data))

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
        job.workload_id, job.state, job.output = workload.id, RUNNING, []
        # the container's log is read again in full
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
