"""One writer for the job store: records and log chunks go to disk from a worker thread.

The job service runs on the server's event loop, and a job may print thousands of lines a
second; writing each chunk (or each state change) to disk there would stall every request
of every user while the disk is slow. The service therefore only hands what to write to a
:class:`StoreWriter`, which returns at once and writes in a thread (``asyncio.to_thread``),
one batch at a time. Whatever arrives while a batch is being written is coalesced into the
next one: a job's latest record replaces the earlier ones, its new log chunks are joined
into one append, a replacement of its log drops the appends before it, and a removal drops
everything before it. So a chatty job costs one append per batch, not one per chunk.

Per job, the order of what was asked is kept (removal, then record, then log); between
batches, the order of the batches. A failed write (a full disk) is logged, naming the job
and what was lost, and the jobs go on: the store is a copy of what the service holds in
memory. :meth:`StoreWriter.flush` waits until everything asked so far is on disk (before a
job's container is created, before a result is written, when the service stops).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from .store import JobStore

Chunk = tuple[str, str]


@dataclass
class _Pending:
    """What is still to be written for one job, in the order it is applied."""

    remove: bool = False
    record: dict[str, Any] | None = None
    replace: list[Chunk] | None = None
    append: list[Chunk] = field(default_factory=list)


class StoreWriter:
    """Coalesces job-store writes and performs them off the event loop, one batch at a time."""

    def __init__(self, store: JobStore, log: logging.Logger | logging.LoggerAdapter):
        self.store, self.log = store, log
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches written so far (for tests and benchmarks)

    # ------------------------------------------------------------------ asking

    def save(self, job_id: str, record: dict[str, Any]) -> None:
        """Write this record (from :func:`.store.job_record`), replacing any earlier one."""
        self._entry(job_id).record = record
        self._kick()

    def append(self, job_id: str, chunks: list[Chunk]) -> None:
        self._entry(job_id).append.extend(chunks)
        self._kick()

    def replace(self, job_id: str, chunks: list[Chunk]) -> None:
        """Make the stored log exactly ``chunks`` (appends asked before are moot)."""
        entry = self._entry(job_id)
        entry.replace, entry.append = list(chunks), []
        self._kick()

    def remove(self, job_id: str) -> None:
        """Remove the job's folder (what was asked before for it is moot)."""
        self._pending[job_id] = _Pending(remove=True)
        self._kick()

    async def flush(self) -> None:
        """Return once everything asked so far (and meanwhile) is written or has failed."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    @property
    def idle(self) -> bool:
        return not self._pending and (self._task is None or self._task.done())

    # ------------------------------------------------------------------ writing

    def _entry(self, job_id: str) -> _Pending:
        return self._pending.setdefault(job_id, _Pending())

    def _kick(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not called from a loop (a script, a test): write now
            batch, self._pending = self._pending, {}
            self._write(batch)
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            await asyncio.to_thread(self._write, batch)

    def _write(self, batch: dict[str, _Pending]) -> None:
        """In the worker thread: apply each job's pending writes; never raises."""
        self.batches += 1
        for job_id, pending in batch.items():
            steps = []
            if pending.remove:
                steps.append(("folder", self.store.remove, ()))
            if pending.record is not None:
                steps.append(("record", self.store.save_record, (pending.record,)))
            if pending.replace is not None:
                steps.append(("log", self.store.replace_output, (pending.replace,)))
            if pending.append:
                steps.append(("log", self.store.append_output, (pending.append,)))
            for what, write, args in steps:
                try:
                    write(job_id, *args)
                except OSError as exc:
                    self.log.warning(
                        "dss-containers: could not keep job %s's %s: %s", job_id, what, exc
                    )
                except Exception:  # a bug must not stop the writer for every other job
                    self.log.exception("dss-containers: could not keep job %s's %s", job_id, what)
