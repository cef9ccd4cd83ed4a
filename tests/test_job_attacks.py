"""Jobs against a real Jupyter server with several users: attacks replayed, fairness, caps.

Real server subprocesses (tests/servers.py) whose identity provider names users by the
``X-Test-User`` header (tests/identities.py), real containers on the local engine, a
real restart. Issue #15, items 1 and 5:

- a job's code writes its own result files, pickles whose ``__reduce__`` would write a
  marker file on the host: the server runs none of them, not when it collects the job,
  not on ``GET jobs/<id>``, not after a restart (the payload is proved live at the end);
- one user's queued jobs do not hold back another user's job when a slot is free;
- a user's queue and a job's output kept in memory are bounded.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import leftover_containers
from servers import TOKEN, ServerProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TESTS = Path(__file__).parent
API = "dss-containers/api/"
CONFIG = """
groups: {alice: [analysts], bob: [analysts]}
execution_configs:
  local:
    backend: docker
    image: default
    permissions: {groups: ["*"]}
"""
IDENTITY = "--ServerApp.identity_provider_class=identities.HeaderIdentityProvider"
LONG = "import time\nprint('started', flush=True)\ntime.sleep(300)\n"


def server_env(folder: Path) -> dict[str, str]:
    """A private config file and Jupyter folders; tests/ importable (the identity provider)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "dss-containers.yaml"
    config.write_text(CONFIG)
    path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(TESTS)]))
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(config), PYTHONPATH=path)
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
        (folder / var).mkdir(exist_ok=True)
        env[var] = str(folder / var)
    return env


def call(server: ServerProcess, user: str, method: str, path: str, body=None):
    """(status, JSON) of an API call as ``user``; HTTP errors are returned, not raised."""
    request = urllib.request.Request(
        server.url + API + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"token {TOKEN}",
            "X-Test-User": user,
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def wait_for(what: str, check, server: ServerProcess, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} not seen within {timeout} s:\n{server.tail()}")


def submit(server: ServerProcess, user: str, code: str) -> str:
    status, body = call(server, user, "POST", "jobs", {"config": "local", "code": code})
    assert status == 201, body
    return body["id"]


def ended(server: ServerProcess, user: str, job_id: str) -> dict:
    return wait_for(
        f"job {job_id} ended",
        lambda: (
            (j := call(server, user, "GET", f"jobs/{job_id}")[1])["state"]
            in ("succeeded", "failed")
            and j
        ),
        server,
    )


def running_jobs(docker_client, job_ids: list[str]) -> set[str]:
    """Which of these jobs have a running container on the engine, by label (one list
    call: a container removed meanwhile is simply not in it)."""
    from jupyter_dss_containers import ownership

    rows = docker_client.api.containers(
        filters={"label": [f"{ownership.MANAGED}=true"], "status": "running"}
    )
    running = {row["Labels"].get(ownership.JOB_ID) for row in rows}
    return running & set(job_ids)


# --------------------------------------------------------------------------- the attack

PLANT = """
import base64, os, pickle
MARKER = {marker!r}

class Evil:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path(%r).write_text('pwned')" % MARKER,))

evil = pickle.dumps(Evil())
print('evil:' + base64.b64encode(evil).decode(), flush=True)
folder = '/tmp/.dss-job'

def plant(name, data):
    with open(os.path.join(folder, name), 'wb') as f:
        f.write(data)

{plant}
os._exit(0)  # the runner writes nothing after this: what was planted stays
"""
VARIANTS = {
    # the format of old: a pickled result, which the server used to unpickle
    "legacy": "plant('result.pkl', evil)",
    # a valid document, and values that would run code if the server loaded them
    "values": (
        "plant('values.pkl', evil)\n"
        'plant(\'result.json\', b\'{"ok": true, "displays": [{"text/plain": "fine"}],'
        ' "values": ["outputs"]}\')'
    ),
    # a document carrying a jsonpickle-style object and a field the schema does not know
    "document": (
        "plant('values.pkl', evil)\n"
        'plant(\'result.json\', b\'{"ok": true, "displays": [{"text/plain": '
        '{"py/reduce": [{"py/function": "builtins.eval"}, {"py/tuple": ["1"]}]}}],'
        ' "__reduce__": ["builtins.eval"]}\')'
    ),
    # the document itself a pickle
    "pickled-document": "plant('result.json', evil)",
}


def test_a_job_that_plants_pickles_runs_no_code_in_the_server(tmp_path, docker_client):
    """eve's jobs leave pickles whose ``__reduce__`` would write a marker file on the host
    (as the old ``result.pkl``, as the values next to a valid document, inside a malformed
    document, as the document itself). The jobs end; the marker does not appear when the
    server collects them, on ``GET jobs/<id>``, nor after a restart on a store that also
    holds an old-style ``result.pkl``; the stored values are the job's bytes untouched;
    and the same bytes, unpickled in a throwaway process, do write the marker (so the
    attack is live). Guards: any unpickling of job output in the server."""
    marker = tmp_path / "marker-written-by-the-server"
    env = server_env(tmp_path / "env")
    first = ServerProcess(tmp_path / "first", env, extra_args=(IDENTITY,)).start()
    try:
        ids = {}
        for name, planted in VARIANTS.items():
            code = PLANT.format(marker=str(marker), plant=planted)
            ids[name] = submit(first, "eve", code)
        rows = {name: ended(first, "eve", job_id) for name, job_id in ids.items()}
        assert not marker.exists()
        assert rows["values"]["state"] == "succeeded", rows["values"]
        assert rows["values"]["displays"] == [{"text/plain": "fine"}]
        assert rows["values"]["result"] == {"values": ["outputs"]}
        assert rows["legacy"]["state"] == "failed"
        assert rows["document"]["state"] == "failed"
        assert "not valid: field 'displays'" in rows["document"]["error"]
        assert rows["pickled-document"]["state"] == "failed"
        assert "not JSON" in rows["pickled-document"]["error"]
        for job_id in ids.values():  # asked again: still nothing runs
            assert call(first, "eve", "GET", f"jobs/{job_id}")[0] == 200
            assert not leftover_containers(docker_client, job_id=job_id)
        assert not marker.exists()
        status, log = call(first, "eve", "GET", f"jobs/{ids['values']}/logs")
        printed = "".join(chunk["text"] for chunk in log["output"])
        evil = base64.b64decode(printed.split("evil:")[1].split()[0])
    finally:
        first.stop()

    store = Path(env["JUPYTER_DATA_DIR"]) / "dss_containers" / "jobs"
    assert (store / ids["values"] / "values.pkl").read_bytes() == evil  # kept untouched
    for job_id in ids.values():  # as an older version's store would hold it
        (store / job_id / "result.pkl").write_bytes(evil)

    second = ServerProcess(tmp_path / "second", env, extra_args=(IDENTITY,)).start()
    try:
        for name, job_id in ids.items():
            status, row = call(second, "eve", "GET", f"jobs/{job_id}")
            assert status == 200 and row["state"] == rows[name]["state"], row
        status, row = call(second, "eve", "GET", f"jobs/{ids['values']}")
        assert row["displays"] == [{"text/plain": "fine"}]
        status, listed = call(second, "eve", "GET", "jobs")
        assert {j["id"] for j in listed["jobs"]} == set(ids.values())
        assert not marker.exists()
    finally:
        second.stop()

    # the payload is live: loading these bytes anywhere does run code
    load = "import pickle, sys; pickle.loads(open(sys.argv[1], 'rb').read())"
    subprocess.run([sys.executable, "-c", load, str(store / ids["values"] / "values.pkl")])
    assert marker.read_text() == "pwned"


# --------------------------------------------------------------------------- fairness


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory, base_image) -> Iterator[ServerProcess]:
    """A server with two job slots on `local`, three queued jobs per user, 4 KiB of output
    kept per job."""
    folder = tmp_path_factory.mktemp("busy")
    limits = (
        "--JobService.max_jobs_per_config=2",
        "--JobService.max_queued_jobs_per_user=3",
        "--JobService.max_output_bytes=4096",
    )
    server = ServerProcess(folder, server_env(folder / "env"), extra_args=(IDENTITY, *limits))
    yield server.start()
    server.stop()


def cancel_all(server: ServerProcess, docker_client, jobs: dict[str, str]) -> None:
    for job_id, user in reversed(jobs.items()):  # the queued first: none starts meanwhile
        call(server, user, "DELETE", f"jobs/{job_id}")
    for job_id in jobs:
        assert not leftover_containers(docker_client, job_id=job_id), job_id


def test_another_users_job_starts_in_a_free_slot_before_the_first_users_next(
    busy_server, docker_client
):
    """alice queues three long jobs on a config of two slots; bob queues one. When one of
    alice's ends, bob's starts, while alice's third still waits, as the engine shows
    (containers by job label). Guards: one user's queue blocking another's job."""
    server, jobs = busy_server, {}
    try:
        alice = [submit(server, "alice", LONG) for _ in range(3)]
        jobs.update(dict.fromkeys(alice, "alice"))
        wait_for("two of alice's jobs running", lambda: running_jobs(docker_client, alice), server)
        wait_for(
            "alice's first two running",
            lambda: running_jobs(docker_client, alice) == set(alice[:2]),
            server,
        )
        bob = submit(server, "bob", "import time\nprint('bob runs', flush=True)\ntime.sleep(300)")
        jobs[bob] = "bob"
        status, row = call(server, "bob", "GET", f"jobs/{bob}")
        assert row["state"] == "queued" and "limit 2 per config" in row["message"], row
        assert not leftover_containers(docker_client, job_id=bob)

        call(server, "alice", "DELETE", f"jobs/{alice[0]}")
        wait_for("bob's job running", lambda: bob in running_jobs(docker_client, [bob]), server)
        assert running_jobs(docker_client, alice) == {alice[1]}
        assert not leftover_containers(docker_client, job_id=alice[2])
        status, row = call(server, "alice", "GET", f"jobs/{alice[2]}")
        assert row["state"] == "queued" and row["message"].startswith("queued: config"), row
    finally:
        cancel_all(server, docker_client, jobs)


def test_a_users_queue_is_capped_and_the_refusal_names_the_limit(busy_server, docker_client):
    """alice fills both slots and the queue (three); her next job is refused with 429
    naming the limit, while bob may still queue. Guards: an unbounded queue per user."""
    server, jobs = busy_server, {}
    try:
        for _ in range(5):
            jobs[submit(server, "alice", LONG)] = "alice"
        status, body = call(server, "alice", "POST", "jobs", {"config": "local", "code": LONG})
        assert status == 429, body
        assert "alice already has 3 jobs queued" in body["message"]
        assert "JobService.max_queued_jobs_per_user" in body["message"]
        jobs[submit(server, "bob", LONG)] = "bob"
        status, listed = call(server, "alice", "GET", "jobs")
        assert len([j for j in listed["jobs"] if j["state"] == "queued"]) == 3
    finally:
        cancel_all(server, docker_client, jobs)


def test_a_jobs_output_is_kept_to_its_tail(busy_server, docker_client):
    """A job prints 40 KB; 4 KiB are kept, in memory and in the job store: the tail, after
    a marker line saying how much was dropped. Guards: a job printing without end filling
    the server's memory or disk."""
    server = busy_server
    code = textwrap.dedent(
        """
        import sys
        for i in range(400):
            print(f"line {i:03d} " + "x" * 90, flush=True)
        """
    )
    job_id = submit(server, "alice", code)
    row = ended(server, "alice", job_id)
    assert row["state"] == "succeeded", row
    status, log = call(server, "alice", "GET", f"jobs/{job_id}/logs")
    texts = [chunk["text"] for chunk in log["output"]]
    assert texts[0].startswith("[dss-containers: ") and "earlier output dropped" in texts[0]
    kept = "".join(texts[1:])
    assert len(kept.encode()) <= 4096 and kept.endswith("line 399 " + "x" * 90 + "\n")
    assert "line 000" not in kept
    status, later = call(server, "alice", "GET", f"jobs/{job_id}/logs?since={log['next']}")
    assert later["output"] == [] and later["next"] == log["next"]
    stored = Path(server.env["JUPYTER_DATA_DIR"]) / "dss_containers" / "jobs" / job_id
    lines = (stored / "output.jsonl").read_text().splitlines()
    assert [json.loads(line)[1] for line in lines] == texts
    status, bad = call(server, "alice", "GET", f"jobs/{job_id}/logs?since=%C2%B2")
    assert status == 400, bad
