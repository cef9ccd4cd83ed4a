"""Taking over the stored jobs of a process that is gone (a server killed and started again).

A restarted process lists the stored jobs at once, then settles each active one with its
daemon or cluster: a container still running is adopted and followed again (its log read
from the start), one that exited while nobody watched is collected, one that vanished fails
the job, saying so. A job whose daemon cannot be asked yet (a host restarting) waits and is
asked again every ``take_over_interval``. It is a mixin of :class:`.service.JobService`
because a taken-over job is then run exactly like a submitted one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .. import ownership, transport
from ..backends import Backend, BackendError, BackendUnavailable, backend_for
from ..backends.base import Workload
from ..config import ConfigFile, load_config
from .model import ACTIVE_STATES, CANCELLED, FAILED, QUEUED, RUNNING, Job, JobError
from .pool import POOL_OF

if TYPE_CHECKING:
    from .service import JobService

LOST = "the process that ran it stopped"


class Recovery:
    """``recover()`` and the take-over of one stored job (mixed into JobService)."""

    async def recover(self: JobService) -> list[Job]:
        """Load the stored jobs; take over the running jobs of processes that are gone.

        Call before reaping orphans: a taken-over job's container is adopted by this
        process, so the reaper leaves it. Returns the jobs taken over.
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

    async def _take_over(self: JobService, job: Job, config_file: ConfigFile) -> bool:
        """Adopt and follow the job's container, or settle the job; False when its daemon
        or cluster cannot be asked yet."""
        if job.done:  # cancelled while waiting
            return True
        if job.state == QUEUED:
            self._finish(job, CANCELLED, JobError(f"job {job.id} was cancelled: {LOST} first"))
            return True
        try:
            backend = backend_for(config_file.get(job.config))
            found = await backend.list({ownership.MANAGED: "true", ownership.JOB_ID: job.id})
            if not found and job.workload_id:  # a pooled runner's container: no job label
                found = await self._pooled_container(backend, job.id, job.workload_id)
        except BackendUnavailable as exc:
            job.message = f"{LOST}; waiting for its daemon to take it over: {exc}"[:300]
            return False
        except (KeyError, BackendError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) else exc
            self._finish(job, FAILED, JobError(f"job {job.id}: {LOST}, and then: {why}"))
            return True
        if not found:
            message = f"job {job.id}: {LOST}, and its container was removed meanwhile"
            self._finish(job, FAILED, JobError(message))
            return True
        self._adopt(job, backend, found[0].id)
        self.log.info("dss-containers: took over job %s (container %s)", job.id, found[0].name)
        return True

    async def _pooled_container(
        self: JobService, backend: Backend, job_id: str, workload_id: str
    ) -> list[Workload]:
        """The pooled job runner's container the store names, if it is still there (its
        labels are a pool's: it was started before its job, for nobody)."""
        labels = {ownership.MANAGED: "true", ownership.KIND: "pool", POOL_OF: "job"}
        found = [w for w in await backend.list(labels) if w.id == workload_id]
        for workload in found:  # removed with it, once the job is settled
            if folder := transport.folder_of(workload.labels):
                self._folders[job_id] = folder
        return found

    def _adopt(self: JobService, job: Job, backend: Backend, workload_id: str) -> None:
        ownership.this_process().adopt(workload_id)
        job.workload_id, job.state, job.message = workload_id, RUNNING, ""
        job.reset_output()  # the container's log is read again in full
        self._logged[job.id] = 0
        if self.writer is not None:
            self.writer.replace(job.id, [])
        self._save(job)
        self._backends[job.id] = backend
        follow = self._collect(job, backend, workload_id)
        self._tasks[job.id] = asyncio.create_task(self._guarded(job, backend, follow))

    async def _take_over_later(self: JobService, job: Job, config_file: ConfigFile) -> None:
        """Ask the daemon again every ``take_over_interval`` until it answers."""
        while True:
            await asyncio.sleep(self.take_over_interval)
            if await self._take_over(job, config_file):
                return
