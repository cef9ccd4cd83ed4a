"""The pure parts of jobs that hold the line: result documents, fair queueing, output caps.

No engine: these are the rules the service applies to what a job hands back and to who
runs next. The end-to-end proofs (a real server, real containers) are in
tests/test_job_attacks.py.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from jupyter_dss_containers.jobs.model import QUEUED, RUNNING, Job, JobRequest
from jupyter_dss_containers.jobs.queueing import wait_reason
from jupyter_dss_containers.jobs.results import BadResult, parse_document

PACKAGE = Path(__file__).parents[1] / "jupyter_dss_containers"


# --------------------------------------------------------------------------- documents


def test_a_plain_result_document_is_accepted() -> None:
    doc = {
        "ok": True,
        "displays": [{"text/plain": "42", "image/png": "iVBOR", "image/svg+xml": "<svg/>"}],
        "values": ["model"],
        "metrics": {"accuracy": 0.9, "log_loss": None, "n": 3},
        "train_seconds": 0.25,
        "task": "classification",
        "labels": ["a", 1, True, 2.5],
        "confusion_matrix": [[3, 1], [0, 4]],
    }
    assert parse_document(json.dumps(doc).encode(), 10_000) == doc


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ([1, 2], "expected a JSON object"),
        ({"displays": []}, "'ok' is missing"),
        ({"ok": "yes"}, "'ok': expected a boolean"),
        ({"ok": False, "ename": "E"}, "lacks evalue, traceback"),
        ({"ok": True, "displays": [{"text/html": {"a": 1}}]}, "'displays'"),
        ({"ok": True, "displays": [{"not a mime": "x"}]}, "'displays'"),
        ({"ok": True, "displays": "<b>x</b>"}, "'displays'"),
        ({"ok": True, "metrics": {"a": "1"}}, "'metrics'"),
        ({"ok": True, "train_seconds": True}, "'train_seconds'"),
        ({"ok": True, "confusion_matrix": [[1.5]]}, "'confusion_matrix'"),
        ({"ok": True, "labels": [{"a": 1}]}, "'labels'"),
        ({"ok": True, "py/object": "os.system"}, "unknown field 'py/object'"),
        ({"ok": True, "__reduce__": ["eval", "1"]}, "unknown field '__reduce__'"),
    ],
)
def test_a_document_of_another_shape_is_refused_with_the_field(document, why) -> None:
    """Guards: a field of the wrong type (or an unknown one) reaching the REST API or the
    kernel as if it were the job's result."""
    with pytest.raises(BadResult, match=why):
        parse_document(json.dumps(document).encode(), 10_000)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b'{"ok": true, "task": "' + b"x" * 200_000 + b'"}', "over the limit of 100000"),
        (b"\x80\x04\x95pickle", "not JSON"),
        (b'{"ok": true, "train_seconds": ' + b"9" * 5000 + b"}", "not JSON"),
        (b'{"ok": true,', "not JSON"),
        (b"[" * 20_000 + b"]" * 20_000, "nested too deeply|not JSON"),
    ],
    ids=["too big", "a pickle", "a 5000-digit integer", "cut short", "deeply nested"],
)
def test_too_big_deep_or_foreign_bytes_are_refused(data, why) -> None:
    """Guards: a RecursionError or a huge integer escaping the parser (a failed
    collection), or a document over the limit being kept."""
    with pytest.raises(BadResult, match=why):
        parse_document(data, 100_000)


def _unpickling_calls(path: Path) -> list[str]:
    names = {"loads", "load", "Unpickler", "read_pickle"}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        func = getattr(node, "func", None) if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            modules = ("pickle", "cloudpickle", "dill", "joblib", "pd", "np", "numpy")
            if func.attr in names and func.value.id in modules:
                found.append(f"{path.name}:{node.lineno} {func.value.id}.{func.attr}")
    return found


def test_only_the_kernel_side_api_and_the_in_container_runner_unpickle() -> None:
    """Every module of the package but ``jobs/api.py`` (the submitting kernel),
    ``jobs/runner.py`` and ``services/runtime.py`` (inside their containers; the server
    only copies the runtime's source into a volume) is free of unpickling calls, so the
    server imports no code path that deserializes a job's or a model's bytes (guards: a
    ``pickle.loads`` coming back into the service, the store or a handler)."""
    inside = ("jobs/api.py", "jobs/runner.py", "services/runtime.py")
    found = [
        call
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).as_posix() not in inside
        for call in _unpickling_calls(path)
    ]
    assert found == []
    imported = [
        path.name
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).as_posix() != "services/runtime.py"
        and re.search(
            r"from \.?runtime import|services\.runtime|from \. import runtime", path.read_text()
        )
    ]
    assert imported == [], "the serving runtime is imported outside its container"
    assert _unpickling_calls(PACKAGE / "jobs" / "api.py"), "the check sees a real call"


# --------------------------------------------------------------------------- queueing


def job(job_id: str, owner: str, state: str = QUEUED, config: str = "c") -> Job:
    return Job(id=job_id, request=JobRequest(config, "python"), owner=owner, image="i", state=state)


def startable(jobs: list[Job], per_user: int = 4, per_config: int = 2) -> list[str]:
    return [
        j.id for j in jobs if j.state == QUEUED and not wait_reason(j, jobs, per_user, per_config)
    ]


def test_another_users_job_takes_a_free_slot_before_the_busy_users_next() -> None:
    """A runs two jobs on a config of two slots, with a third queued; B queues one. A slot
    frees: B's job may start, A's third may not (guards: the old "behind an earlier queued
    job of the same config" rule, which made B wait for A)."""
    jobs = [job("a1", "A", RUNNING), job("a2", "A", RUNNING), job("a3", "A"), job("b1", "B")]
    assert startable(jobs) == []
    assert "already runs 2 jobs (limit 2 per config)" in wait_reason(jobs[3], jobs, 4, 2)
    jobs[0].state = "succeeded"
    assert startable(jobs) == ["b1"]
    assert "first for jobs of users with fewer jobs running there" in wait_reason(
        jobs[2], jobs, 4, 2
    )


def test_a_users_own_jobs_start_first_come_first_served() -> None:
    jobs = [job("a1", "A"), job("a2", "A"), job("b1", "B", config="other")]
    assert startable(jobs, per_config=8) == ["a1", "b1"]
    assert "behind A's earlier job a1" in wait_reason(jobs[1], jobs, 4, 8)


def test_a_user_at_their_own_limit_does_not_hold_a_free_slot() -> None:
    """A's head job cannot run (A is at the per-user limit), so it must not count as ahead
    of B's (guards: a slot left idle behind a user who may not use it)."""
    jobs = [job("a0", "A", RUNNING, config="other"), job("a1", "A"), job("b1", "B")]
    assert startable(jobs, per_user=1, per_config=1) == ["b1"]


def test_a_free_slot_always_goes_to_someone() -> None:
    """Whatever the mix, when a config has a free slot and queued jobs that may use it, at
    least one of them may start (guards: a fairness rule that deadlocks)."""
    import random

    rng = random.Random(7)
    for _ in range(300):
        jobs = []
        for i in range(rng.randint(1, 12)):
            state = rng.choice([QUEUED, QUEUED, RUNNING, "succeeded"])
            jobs.append(job(f"j{i}", rng.choice("ABC"), state, rng.choice(["c", "d"])))
        per_user, per_config = rng.randint(1, 3), rng.randint(1, 3)
        for config in ("c", "d"):
            running = [j for j in jobs if j.state == RUNNING]
            free = per_config - sum(1 for j in running if j.config == config)
            heads = {}
            for j in jobs:
                if j.state == QUEUED:
                    heads.setdefault(j.owner, j)
            hopeful = [
                j
                for owner, j in heads.items()
                if j.config == config and sum(r.owner == owner for r in running) < per_user
            ]
            if free > 0 and hopeful:
                assert startable(jobs, per_user, per_config), (jobs, config)


# --------------------------------------------------------------------------- output


def test_output_over_the_cap_keeps_the_tail_behind_a_marker() -> None:
    """Guards: a job printing without end filling the server's memory (tiny chunks too:
    each counts its bookkeeping); a poller's position going wrong once the head is dropped."""
    j = job("o1", "A", RUNNING)
    for i in range(100):
        j.add_output("stdout", f"line {i:03d}\n", limit=1000)  # 9 bytes + 64 a chunk
    kept = "".join(text for _, text in j.output[1:])
    assert j.output_bytes <= 1000 and j.output_bytes == len(kept) + 64 * (len(j.output) - 1)
    assert j.output[0] == (
        "stderr",
        f"[dss-containers: {900 - len(kept)} bytes of earlier output dropped "
        "(JobService.max_output_bytes)]\n",
    )
    assert j.logs().endswith("line 098\nline 099\n") and "line 000" not in j.logs()
    chunks, upto = j.output_since(0)  # a poller that saw nothing: the marker, then the tail
    assert chunks == j.output and upto == 100  # indexes count every chunk ever added
    assert j.output_since(upto) == ([], upto)
    assert j.output_since(upto - 1) == ([("stdout", "line 099\n")], upto)
    j.add_output("stderr", "late\n", limit=1000)
    assert j.output_since(upto)[0] == [("stderr", "late\n")]


def test_one_chunk_over_the_cap_keeps_its_end() -> None:
    j = job("o2", "A", RUNNING)
    j.add_output("stdout", "x" * 1000 + "THE END\n", limit=200)
    assert j.output_bytes == 200 and j.logs().endswith("THE END\n")
    assert "872 bytes of earlier output dropped" in j.output[0][1]
