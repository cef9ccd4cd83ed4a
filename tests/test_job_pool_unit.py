"""Pooled job runners without an engine: the runner's wait mode, the hand-over into its
folder, and which jobs and configs may use a pool."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import pytest

from jupyter_dss_containers import transport
from jupyter_dss_containers.config import ConfigError, ExecutionConfig, load_config
from jupyter_dss_containers.jobs import pool
from jupyter_dss_containers.jobs.payload import RUNNER

SAFETY = 30  # seconds before a broken runner fails the test (never reached when it works)


@pytest.fixture
def folder():
    path = transport.new_folder()
    yield path
    transport.remove_folder(path)


def wait_for(predicate) -> None:
    deadline = time.monotonic() + SAFETY
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)


def test_a_waiting_runner_runs_the_payload_handed_over_once(folder):
    """``runner.py --wait`` blocks on its pipe until the service writes the payload and one
    byte, then runs the job as a cold one does (guards: a runner that runs before its
    payload is complete, or leaves its pipe for a second job)."""
    shutil.copy(RUNNER, os.path.join(folder, "runner.py"))
    proc = subprocess.Popen([sys.executable, os.path.join(folder, "runner.py"), "--wait"])
    try:
        wait_for(lambda: os.path.exists(os.path.join(folder, pool.GO)))
        time.sleep(0.2)
        assert proc.poll() is None  # still waiting: nothing to run yet
        payload = {"kind": "python", "code": "x = 41 + 1", "inputs": {}, "outputs": ["x"]}
        pool.hand_over(folder, {"payload.pkl": pickle.dumps({**payload, "operation": None})})
        assert proc.wait(SAFETY) == 0
    finally:
        proc.kill()
    with open(os.path.join(folder, "result.json")) as f:
        assert json.load(f)["ok"] is True
    with open(os.path.join(folder, "values.pkl"), "rb") as f:
        assert pickle.load(f) == {"outputs": {"x": 42}}  # the test's own file
    assert not os.path.exists(os.path.join(folder, pool.GO))  # no second job
    assert not os.path.exists(os.path.join(folder, "payload.pkl"))


def test_the_hand_over_refuses_a_runner_that_does_not_wait(folder):
    """No reader on the pipe (the runner died) fails at once, not a hang (guards: a
    blocking open of the pipe, which would hang the job forever)."""
    os.mkfifo(os.path.join(folder, pool.GO), 0o600)
    with pytest.raises(transport.TransportError, match="does not wait"):
        pool.hand_over(folder, {"payload.pkl": b"x"})


def test_the_hand_over_follows_no_planted_link_or_file(folder, tmp_path):
    """A link or a plain file where the pipe should be is refused, and nothing is written
    through it (guards: a container that points its folder's names at the server's files)."""
    target = tmp_path / "server-file"
    target.write_bytes(b"keep")
    os.symlink(target, os.path.join(folder, pool.GO))
    with pytest.raises(transport.TransportError):
        pool.hand_over(folder, {"payload.pkl": b"x"})
    assert target.read_bytes() == b"keep"
    os.unlink(os.path.join(folder, pool.GO))
    with open(os.path.join(folder, pool.GO), "w"):
        pass
    with pytest.raises(transport.TransportError, match="not a pipe"):
        pool.hand_over(folder, {"payload.pkl": b"x"})


def test_the_hand_over_writes_only_into_a_runner_folder(tmp_path):
    """A folder that is not one made by the transport is refused (guards: a path taken
    from a label or a record and written to)."""
    with pytest.raises(transport.TransportError, match="not a job runner's folder"):
        pool.hand_over(str(tmp_path), {"payload.pkl": b"x"})


def test_only_flat_job_folder_payloads_use_a_pool():
    """A payload with files deeper than the job folder (a recipe's package) starts cold
    (guards: files written outside the runner's folder, or silently dropped)."""
    d = pool.JOB_DIR
    assert pool.in_job_folder({f"{d}/payload.pkl": b"", f"{d}/runner.py": b""}) == {
        "payload.pkl": b"",
        "runner.py": b"",
    }
    assert pool.in_job_folder({f"{d}/lib/pkg/__init__.py": b""}) is None
    assert pool.in_job_folder({"/etc/x": b""}) is None
    assert pool.in_job_folder({f"{d}/{pool.GO}": b""}) is None


def _write(tmp_path, body: str):
    path = tmp_path / "c.yaml"
    path.write_text("execution_configs:\n  p:\n    backend: docker\n    image: default\n" + body)
    return load_config(str(path))


def test_warm_pool_jobs_is_read_and_refuses_a_workspace(tmp_path):
    """``warm_pool: {jobs: N}`` sets the pool and, like a kernel pool, makes the default
    workspace none and refuses a mounted one (guards: a runner started for nobody that
    mounts someone's files)."""
    config = _write(tmp_path, "    warm_pool: {jobs: 2}\n").get("p")
    assert config.warm_pool_jobs == 2 and config.warm_pool_size == 0
    assert config.workspace.mount == "none"
    with pytest.raises(ConfigError, match=r"workspace\.mount"):
        _write(tmp_path, "    warm_pool: {jobs: 1}\n    workspace: {mount: auto}\n")
    with pytest.raises(ConfigError, match="warm_pool"):
        _write(tmp_path, "    warm_pool: {jobs: -1}\n")


def test_a_pool_needs_a_local_daemon():
    """A remote daemon or Kubernetes gets no pool: it cannot mount the runner's folder."""
    from jupyter_dss_containers.backends import local_backend_for

    local = ExecutionConfig.from_dict(
        "p", {"backend": "docker", "image": "i", "warm_pool": {"jobs": 1}}
    )
    assert pool.poolable(local, local_backend_for(local))
    remote = ExecutionConfig.from_dict(
        "r",
        {
            "backend": "docker",
            "image": "i",
            "warm_pool": {"jobs": 1},
            "docker": {"host": "tcp://h:2375"},
        },
    )
    assert not pool.poolable(remote, local_backend_for(remote))
    none = ExecutionConfig.from_dict("n", {"backend": "docker", "image": "i"})
    assert not pool.poolable(none, local_backend_for(none))


def test_a_waiting_runner_exits_on_sigterm(folder):
    """A pool drained while its runner waits: SIGTERM ends it at once (guards: a runner
    that ignores SIGTERM as PID 1 and holds removal up for the kill timeout)."""
    shutil.copy(RUNNER, os.path.join(folder, "runner.py"))
    proc = subprocess.Popen([sys.executable, os.path.join(folder, "runner.py"), "--wait"])
    try:
        wait_for(lambda: os.path.exists(os.path.join(folder, pool.GO)))
        proc.terminate()
        assert proc.wait(SAFETY) != 0
    finally:
        proc.kill()
    assert not os.path.exists(os.path.join(folder, "result.json"))


def test_only_python_jobs_on_the_configs_image_take_runners():
    """An R job (Rscript, not the runner) and a code environment's job (another image)
    start cold (guards: an R cell fed to the Python runner, or a pool whose runners are
    thrown away as stale by every job in a code environment)."""
    from jupyter_dss_containers.jobs.model import JobRequest

    assert pool.pooled_request(JobRequest("p", "python", "x = 1"))
    assert pool.pooled_request(JobRequest("p", "model", operation={"op": "train"}))
    assert not pool.pooled_request(JobRequest("p", "r", "x <- 1"))
    assert not pool.pooled_request(JobRequest("p", "python", "x = 1", code_env="sk"))


def test_results_read_from_the_host_folder_follow_no_link(folder, tmp_path):
    """A job's result read from its host folder is a regular file opened without following
    links, within the limit; a link or folder is left to the backend (guards: a job that
    points ``result.json`` at a server file and has the server read it back as its own)."""
    from jupyter_dss_containers.backends.base import FilesTooLarge
    from jupyter_dss_containers.jobs.hostread import read_flat

    secret = tmp_path / "server-secret"
    secret.write_bytes(b"not the job's")
    os.symlink(secret, os.path.join(folder, "result.json"))
    assert read_flat(folder, "result.json", 1024) is None  # asks the backend instead
    os.mkdir(os.path.join(folder, "values.pkl"))
    assert read_flat(folder, "values.pkl", 1024) is None
    with open(os.path.join(folder, "error.txt"), "wb") as f:
        f.write(b"x" * 10)
    assert read_flat(folder, "error.txt", 10) == {"error.txt": b"x" * 10}
    with pytest.raises(FilesTooLarge):
        read_flat(folder, "error.txt", 9)
    assert read_flat(folder, "absent.json", 10) == {}
    assert read_flat(str(tmp_path), "server-secret", 100) is None  # not a job folder
