"""The job store as the job service uses it: records, logs and results kept on disk.

A mixin of :class:`.service.JobService` (its ``store_dir`` and ``store_class`` traits):
one :class:`.writer.StoreWriter` writes records and logs in a worker thread, results are
written in threads, so nothing here does file I/O on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .. import ownership
from .model import Job
from .results import JobResult
from .store import JobStore, job_record
from .writer import StoreWriter

if TYPE_CHECKING:
    from .service import JobService


class Persistence:
    """The store, its writer, and what the service keeps there."""

    @property
    def store(self: JobService) -> JobStore | None:
        """The job store under ``store_dir`` (None: jobs are kept in memory only)."""
        if self._store is None and self.store_dir:
            self._store = self.store_class(self.store_dir)
        return self._store

    @property
    def writer(self: JobService) -> StoreWriter | None:
        """The one writer of the store (records and logs, off the event loop)."""
        if self._writer is None and self.store is not None:
            self._writer = StoreWriter(self.store, self.log)
        return self._writer

    def _save(self: JobService, job: Job) -> None:
        """Have the job's record written as it is now (a full disk is logged, and the job
        goes on)."""
        if self.writer is not None:
            self.writer.save(job.id, job_record(job, ownership.this_process().server_id))

    async def _keep_result(self: JobService, job: Job, result: JobResult) -> bool:
        """Write the result to the store (in a thread: values may be large); True when it
        is there."""
        if self.store is None or self.writer is None:
            return False
        await self.writer.flush()  # the job's folder and record first
        try:
            await asyncio.to_thread(self.store.save_result, job.id, result)
        except OSError as exc:
            self.log.warning("dss-containers: could not keep job %s's result: %s", job.id, exc)
            return False
        return True
