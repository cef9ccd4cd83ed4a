"""The on-disk job store: records round-trip, damage is contained, ids cannot name paths."""

from __future__ import annotations

import stat

import pytest

from jupyter_dss_containers.jobs.model import FAILED, Job, JobRequest, RemoteError
from jupyter_dss_containers.jobs.results import JobResult
from jupyter_dss_containers.jobs.store import JobStore


def make_job(job_id: str = "abc123") -> Job:
    request = JobRequest(config="local", kind="python", code="1/0", inputs={"secret": "s3"})
    return Job(id=job_id, request=request, owner="ana", image="img:1")


def test_record_round_trips_without_inputs(tmp_path) -> None:
    store = JobStore(tmp_path / "jobs")
    job = make_job()
    job.state, job.exit_code = FAILED, 1
    job.error = RemoteError("ZeroDivisionError", "division by zero", "Traceback...\n", job.id)
    store.save(job, "server-1")
    store.append_output(job.id, [("stdout", "hello\n"), ("stderr", "oops\n")])
    result = JobResult({"ok": True, "displays": [{"text/plain": "42"}]}, b"\x80\x05N.")
    store.save_result(job.id, result)
    ((loaded, server_id),) = store.load_all()
    assert server_id == "server-1"
    assert (loaded.state, loaded.exit_code, loaded.owner) == (FAILED, 1, "ana")
    assert isinstance(loaded.error, RemoteError) and loaded.error.traceback == "Traceback...\n"
    assert loaded.output == [("stdout", "hello\n"), ("stderr", "oops\n")]
    assert loaded.request.inputs == {}  # inputs never reach the disk
    assert "s3" not in (store.folder(job.id) / "job.json").read_text()
    assert store.load_result(job.id, 1000) == result
    for path in (store.root, store.folder(job.id), store.folder(job.id) / "job.json"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_damaged_records_are_skipped_and_kept(tmp_path, caplog) -> None:
    store = JobStore(tmp_path / "jobs")
    store.save(make_job("good1"), "s")
    store.append_output("good1", [("stdout", "kept\n")])
    with (store.folder("good1") / "output.jsonl").open("a") as f:
        f.write('["stdout", "cut sho')  # a line cut short by a SIGKILL
    store.folder("bad1").mkdir()
    (store.folder("bad1") / "job.json").write_text("{not json")
    loaded = store.load_all()
    assert [job.id for job, _ in loaded] == ["good1"]
    assert loaded[0][0].output == [("stdout", "kept\n")]
    assert "bad1" in caplog.text and (store.folder("bad1") / "job.json").exists()


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", ".."])
def test_ids_cannot_name_other_paths(tmp_path, job_id) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        JobStore(tmp_path).folder(job_id)


class Boom:
    """Unpickling this writes a marker file: the proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_stored_values_and_tables_are_bytes_never_unpickled(tmp_path) -> None:
    """A stored result's values come back as the bytes the job wrote, even a pickle that
    would run code, and an R job's tables as CSV bytes (guards: a store that unpickles)."""
    import pickle

    marker = tmp_path / "unpickled"
    store = JobStore(tmp_path / "jobs")
    store.save(make_job("evil1"), "s")
    evil = pickle.dumps(Boom(marker))
    doc = {"ok": True, "displays": [], "values": ["outputs"], "tables": ["a", "b"]}
    tables = {"a": b"x\n1\n", "b": b"y\n2\n"}
    store.save_result("evil1", JobResult(doc, evil, tables))
    loaded = store.load_result("evil1", 1000)
    assert loaded.values == evil and loaded.tables == tables and loaded.document == doc
    document_only = store.load_result("evil1", 1000, values=False)  # what the REST API reads
    assert document_only.document == doc and document_only.values is None
    assert not marker.exists()
    assert store.load_result("nosuch", 1000) is None


def test_a_tampered_or_oversized_stored_document_is_not_believed(tmp_path, caplog) -> None:
    """The store checks a document again when it reads it (guards: a result.json edited
    on disk, or bigger than the limit, reaching the REST API as it is)."""
    store = JobStore(tmp_path / "jobs")
    store.save(make_job("doc1"), "s")
    store.save_result("doc1", JobResult({"ok": True, "displays": [{"text/plain": "x" * 500}]}))
    assert store.load_result("doc1", 100) is None
    assert "over the limit of 100" in caplog.text
    (store.folder("doc1") / "result.json").write_text(
        '{"ok": true, "displays": [{"text/html": 1}]}'
    )
    assert store.load_result("doc1", 1000) is None
    assert "'displays'" in caplog.text
