"""The job service's store writer and wiring, without an engine: writes leave the event
loop, are coalesced, keep their order, survive a failing disk; every trait is read."""

from __future__ import annotations

import ast
import asyncio
import errno
import logging
import threading
from pathlib import Path

import pytest

import jupyter_dss_containers
from jupyter_dss_containers.jobs.model import Job, JobRequest
from jupyter_dss_containers.jobs.service import JobService
from jupyter_dss_containers.jobs.store import JobStore, job_record
from jupyter_dss_containers.jobs.writer import StoreWriter

JOBS_PACKAGE = Path(jupyter_dss_containers.__file__).parent / "jobs"
SAFETY = 60  # seconds a blocked writer waits before giving up (never reached when it works)
LOG = logging.getLogger("test-writer")


def make_job(job_id: str, state: str = "queued") -> Job:
    job = Job(id=job_id, request=JobRequest("local", "python", "1"), owner="ana", image="img")
    job.state = state
    return job


class GatedStore(JobStore):
    """A real store whose writes note their thread, and whose first log append waits for
    the test to open a gate (a disk that hangs)."""

    def __init__(self, root):
        super().__init__(root)
        self.threads: set[int] = set()
        self.appends = 0
        self.entered, self.gate = threading.Event(), threading.Event()

    def save_record(self, job_id, record):
        self.threads.add(threading.get_ident())
        super().save_record(job_id, record)

    def append_output(self, job_id, chunks):
        self.threads.add(threading.get_ident())
        self.appends += 1
        if self.appends == 1:
            self.entered.set()
            assert self.gate.wait(SAFETY), "the test never opened the gate"
        super().append_output(job_id, chunks)

    def replace_output(self, job_id, chunks):
        self.threads.add(threading.get_ident())
        super().replace_output(job_id, chunks)

    def remove(self, job_id):
        self.threads.add(threading.get_ident())
        super().remove(job_id)


async def test_writes_leave_the_loop_and_chunks_coalesce_while_the_disk_hangs(tmp_path):
    """While a write hangs in the worker thread, the loop goes on taking chunks (guards:
    a store written on the event loop, which would hang here), and the 200 chunks that came
    meanwhile reach the disk as one append, in order, after the latest record."""
    store = GatedStore(tmp_path / "jobs")
    writer = StoreWriter(store, LOG)
    job = make_job("slow1")
    writer.save(job.id, job_record(job, "s"))
    writer.append(job.id, [("stdout", "first\n")])
    assert await asyncio.to_thread(store.entered.wait, SAFETY)  # the writer is stuck on disk
    for i in range(200):  # each returns at once: nothing here touches the disk
        writer.append(job.id, [("stdout", f"line {i}\n")])
    job.state = "running"
    writer.save(job.id, job_record(job, "s"))
    assert not writer.idle and store.appends == 1
    store.gate.set()
    await writer.flush()
    assert writer.idle
    assert threading.get_ident() not in store.threads
    assert store.appends == 2  # the 200 chunks: one append
    ((loaded, _),) = store.load_all()
    assert loaded.state == "running"
    assert loaded.output == [("stdout", "first\n")] + [
        ("stdout", f"line {i}\n") for i in range(200)
    ]


async def test_a_replacement_or_removal_supersedes_what_was_asked_before(tmp_path):
    """Order within a job is kept through coalescing (guards: a stale append written after
    the log was replaced, or a removed folder brought back by a record asked before it)."""
    store = GatedStore(tmp_path / "jobs")
    writer = StoreWriter(store, LOG)
    store.gate.set()
    a, b = make_job("aaa1"), make_job("bbb1")
    for job in (a, b):
        writer.save(job.id, job_record(job, "s"))
    writer.append(a.id, [("stdout", "dropped head\n")])
    writer.replace(a.id, [("stderr", "[marker]\n"), ("stdout", "tail\n")])
    writer.append(a.id, [("stdout", "after\n")])
    writer.save(b.id, job_record(b, "s"))
    writer.remove(b.id)
    await writer.flush()
    assert [job.id for job, _ in store.load_all()] == ["aaa1"]
    assert store.load_output(a.id) == [
        ("stderr", "[marker]\n"),
        ("stdout", "tail\n"),
        ("stdout", "after\n"),
    ]
    assert not store.folder(b.id).exists()
    writer.save(b.id, job_record(b, "s"))  # a record after the removal is kept
    await writer.flush()
    assert sorted(job.id for job, _ in store.load_all()) == ["aaa1", "bbb1"]


class FullForOne(JobStore):
    """A store whose disk is full for one job's record (ENOSPC, as a tmpfs would say)."""

    def save_record(self, job_id, record):
        if job_id == "full1":
            raise OSError(errno.ENOSPC, "No space left on device")
        super().save_record(job_id, record)


async def test_a_failed_write_is_logged_and_the_writer_goes_on(tmp_path, caplog):
    """Guards: a writer that dies on the first OSError (every later job unrecorded) or
    swallows it silently. The real full disk: test_faults.py's job-store test."""
    store = FullForOne(tmp_path / "jobs")
    writer = StoreWriter(store, LOG)
    writer.save("full1", job_record(make_job("full1"), "s"))
    writer.save("good1", job_record(make_job("good1"), "s"))
    await writer.flush()
    assert "could not keep job full1's record" in caplog.text
    assert "No space left on device" in caplog.text
    writer.save("good2", job_record(make_job("good2"), "s"))  # a later batch
    await writer.flush()
    assert sorted(job.id for job, _ in store.load_all()) == ["good1", "good2"]


def test_every_job_service_trait_is_read():
    """Each configurable trait is read (``self.<name>``) somewhere in the jobs package
    other than its declaration (guards: a knob a site sets that changes nothing, as
    ``stop_grace_seconds`` once was)."""
    read: set[str] = set()
    for path in JOBS_PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Load)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                read.add(node.attr)
    traits = set(JobService.class_trait_names(config=True))
    assert traits - read == set()


@pytest.mark.parametrize("trait", sorted(JobService.class_trait_names(config=True)))
def test_every_job_service_trait_has_help_and_is_in_the_readme(trait):
    """A trait a site may set has a help text and a row in the README's Jobs section
    (guards: an undocumented knob)."""
    assert JobService.class_traits()[trait].help
    readme = (JOBS_PACKAGE.parent.parent / "README.md").read_text()
    jobs_section = readme.split("\n## Jobs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in jobs_section.splitlines() if line.startswith("| `")]
    assert any(f"`{trait}`" in row for row in rows), f"JobService.{trait} is not in the README"


async def test_the_store_keeps_the_jobs_that_finished_last(tmp_path):
    """Past ``keep_finished``, the jobs that finished first are forgotten, in memory and on
    disk, whatever their submission order (guards: a long job forgotten the moment it ends
    because it was submitted first, or a store that grows with every job)."""
    store = JobStore(tmp_path / "jobs")
    ends = {"old1": 50.0, "old2": 10.0, "old3": 40.0, "old4": 20.0, "old5": 30.0}
    for created, (job_id, finished) in enumerate(ends.items()):
        job = make_job(job_id, "succeeded")
        job.created, job.finished = float(created), finished
        store.save(job, "gone-server")
    service = JobService(store_dir=str(store.root), keep_finished=2)
    assert await service.recover() == []  # nothing active to take over
    await service.writer.flush()
    assert sorted(j.id for j in service.list()) == ["old1", "old3"]
    assert sorted(job.id for job, _ in store.load_all()) == ["old1", "old3"]
