"""Jobs on the real engine: code, R, plugin recipes and model jobs, permissions and limits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import containers_created, leftover_containers
from job_images import job_image

from jupyter_dss_containers import jobs, ownership
from jupyter_dss_containers.config import BaseImageSpec
from jupyter_dss_containers.jobs import JobError, JobRequest, JobService, RemoteError
from jupyter_dss_containers.jobs.store import JobStore
from jupyter_dss_containers.permissions import PermissionDenied

pytestmark = pytest.mark.docker

CONFIG = """
execution_configs:
  jobs:
    backend: docker
    image: {jobs}
    docker: {{resources: {{memory: 512m, cpus: 1}}}}
    permissions: {{groups: ["*"]}}
  bare:
    backend: docker
    image: {base}
    permissions: {{groups: ["*"]}}
  admins-only:
    backend: docker
    image: {jobs}
    permissions: {{groups: [admins]}}
"""


@pytest.fixture(scope="module")
def job_config(workspace, docker_client, base_image):
    """A config file naming the job test image (built once), set for this module."""
    path = workspace / "jobs.yaml"
    path.write_text(CONFIG.format(jobs=job_image(docker_client, base_image), base=base_image))
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)
    yield path
    os.environ.pop("DSS_CONTAINERS_CONFIG", None)


@pytest.fixture(scope="module")
def r_image(docker_client) -> str:
    from jupyter_dss_containers import images

    spec = BaseImageSpec(name="with-r", bootstrap="debian", with_r=True)
    return images.build_base_image(spec, docker_client)


def test_code_job_streams_output_and_returns_remote_traceback(job_config, capsys, docker_client):
    job = jobs.submit("jobs", "print('from the container')\nx = 1\ndef f():\n    1 / 0\nf()")
    jobs.wait(job.id)
    assert "from the container" in capsys.readouterr().out
    with pytest.raises(RemoteError) as info:
        jobs.result(job.id)
    assert info.value.ename == "ZeroDivisionError"
    assert 'File "<container-cell>", line 4, in f' in info.value.traceback
    assert "runner.py" not in info.value.traceback
    assert jobs.jobs()[-1]["state"] == "failed"
    assert not leftover_containers(docker_client, job_id=job.id)


def test_forbidden_config_is_refused_before_anything_starts(job_config, docker_client):
    """Guards the order: no container is ever made for a refused job (the engine's event
    log, so a container started then removed on refusal fails this)."""
    before = len(jobs.jobs())
    began = time.time()
    with pytest.raises(PermissionDenied, match="'admins-only'"):
        jobs.submit("admins-only", "print(1)")
    assert len(jobs.jobs()) == before
    mine = ownership.this_process().server_id  # (other test processes use the name too)
    assert containers_created(docker_client, began, config="admins-only", server_id=mine) == []
    assert not leftover_containers(docker_client, config="admins-only")


def test_missing_library_is_named(job_config):
    """The default image has the scientific stack but not XGBoost: the job names it."""
    from xgboost import XGBClassifier

    with pytest.raises(JobError, match="lacks the Python library 'xgboost'"):
        jobs.train("bare", XGBClassifier(n_estimators=2), np.zeros((4, 2)), np.array([0, 1, 0, 1]))


def test_sklearn_pipeline_train_retrain_score_evaluate(job_config):
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, y_train, X_test, y_test = X[:400], y[:400], X[400:], y[400:]
    make = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))  # noqa: E731
    local = make().fit(X_train, y_train)

    trained = jobs.train("jobs", make(), X_train, y_train)
    assert trained.task == "classification" and trained.train_seconds > 0
    assert trained.metrics["accuracy"] > 0.9
    np.testing.assert_array_equal(trained.model.predict(X_test), local.predict(X_test))

    scored = jobs.score("jobs", trained.model, X_test, chunk_size=50)
    np.testing.assert_array_equal(scored.predictions, local.predict(X_test))
    np.testing.assert_allclose(scored.probabilities, local.predict_proba(X_test), rtol=1e-9)

    evaluation = jobs.evaluate("jobs", trained.model, X_test, y_test)
    table = dict(zip(evaluation.metrics.metric, evaluation.metrics.value, strict=True))
    assert table["accuracy"] == pytest.approx((local.predict(X_test) == y_test).mean())
    assert {"f1_macro", "roc_auc", "log_loss"} <= set(table)
    assert evaluation.confusion_matrix.sum() == len(y_test)
    assert evaluation.plot_png.startswith(b"\x89PNG")

    retrained = jobs.retrain("jobs", trained.model, X_test, y_test)
    refit_locally = make().fit(X_test, y_test)
    np.testing.assert_array_equal(retrained.model.predict(X_train), refit_locally.predict(X_train))


def test_xgboost_regression_matches_local(job_config):
    from sklearn.datasets import load_diabetes
    from xgboost import XGBRegressor

    X, y = load_diabetes(return_X_y=True)
    make = lambda: XGBRegressor(n_estimators=30, max_depth=3, random_state=0, n_jobs=1)  # noqa: E731
    local = make().fit(X[:300], y[:300])
    trained = jobs.train("jobs", make(), X[:300], y[:300])
    assert trained.task == "regression" and {"r2", "rmse", "mae"} <= set(trained.metrics)
    scored = jobs.score("jobs", trained.model, X[300:], chunk_size=40)
    np.testing.assert_allclose(scored.predictions, local.predict(X[300:]), rtol=1e-5)
    evaluation = jobs.evaluate("jobs", trained.model, X[300:], y[300:])
    assert set(evaluation.metrics.metric) >= {"r2", "rmse"}
    assert evaluation.plot_png is None


def install_demo_recipe(tmp_path, monkeypatch) -> None:
    """A plugin package (two modules) declaring the recipe ``scaled``, importable here."""
    package = tmp_path / "dss_demo_recipes"
    package.mkdir()
    (package / "__init__.py").write_text(
        "def scaled(values, factor):\n"
        "    from .helpers import scale\n"
        "    import socket\n"
        "    return {'values': scale(values, factor), 'host': socket.gethostname()}\n"
    )
    (package / "helpers.py").write_text("def scale(v, f):\n    return [x * f for x in v]\n")
    dist = tmp_path / "dss_demo_recipes-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dss-demo-recipes\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[jupyter_dss_containers.recipes]\nscaled = dss_demo_recipes:scaled\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_plugin_recipe_runs_with_its_library(job_config, tmp_path, monkeypatch):
    install_demo_recipe(tmp_path, monkeypatch)
    value = jobs.run_recipe("jobs", "scaled", {"values": [1, 2], "factor": 3})
    assert value["values"] == [3, 6]
    assert value["host"] != __import__("socket").gethostname()
    with pytest.raises(JobError, match="no recipe 'nope'"):
        jobs.run_recipe("jobs", "nope")


def test_r_job_returns_a_data_frame(job_config, r_image, workspace):
    import pandas as pd

    path = workspace / "jobs-r.yaml"
    path.write_text(
        "execution_configs:\n  r:\n    backend: docker\n"
        f"    image: {r_image}\n    permissions: {{groups: ['*']}}\n"
    )
    service = JobService(config_file=str(path))
    code = textwrap.dedent(
        """
        cat("rows in:", nrow(df), "\\n")
        out <- data.frame(name = df$name, double = df$value * 2)
        """
    )
    frame = pd.DataFrame({"name": ["a", "b", "c"], "value": [1.5, 2, 3]})

    failing = 'f <- function(x) stop("no luck: ", x)\nf("here")'

    async def go():
        job = await service.submit(
            JobRequest(config="r", kind="r", code=code, inputs={"df": frame}, outputs=("out",))
        )
        bad = await service.submit(JobRequest(config="r", kind="r", code=failing))
        await asyncio.gather(service.wait(job.id), service.wait(bad.id))
        with pytest.raises(RemoteError) as info:
            await service.result(bad.id)
        kept = await service.result(job.id)  # what the service holds: CSV bytes
        assert kept.values is None and kept.tables["out"].startswith(b'"name","double"')
        return job, await jobs.python_result(service, job.id), info.value

    job, result, error = asyncio.run(go())
    assert "rows in: 3" in job.logs()
    assert result["outputs"]["out"].to_dict("list") == {
        "name": ["a", "b", "c"],
        "double": [3.0, 4.0, 6.0],
    }
    assert error.evalue == "no luck: here"
    assert 'Error in f("here"): no luck: here' in error.traceback


def test_jobs_over_the_user_limit_queue_and_say_so(job_config, docker_client):
    service = JobService(max_jobs_per_user=1)

    async def go():
        first = await service.submit(JobRequest("jobs", "python", "import time; time.sleep(60)"))
        second = await service.submit(JobRequest("jobs", "python", "print('second')"))
        assert second.state == "queued"
        assert "limit 1 per user" in second.message
        for _ in range(1200):
            if first.state == "running":
                break
            await asyncio.sleep(0.05)
        # the first really runs (not merely queued itself): the second waits on the limit
        assert first.state == "running", (first.state, first.message)
        assert second.state == "queued" and "limit 1 per user" in second.message
        await service.cancel(first.id)
        await service.wait(second.id)
        return first, second

    first, second = asyncio.run(go())
    assert first.state == "cancelled"
    assert second.state == "succeeded" and "second" in second.logs()
    assert not leftover_containers(docker_client, job_id=first.id)


CLEANS_UP = """
import time
try:
    print('working', flush=True)
    time.sleep(120)
finally:
    print('cleaned up', flush=True)
"""


def test_a_cancelled_job_gets_sigterm_and_its_grace_to_clean_up(job_config, docker_client):
    """Cancel sends SIGTERM and waits up to ``stop_grace_seconds``: the job's ``finally``
    runs and its last output is kept; with a grace of 0 it is killed at once (guards: the
    trait read by nothing, a cancel that kills before the job can clean up, or one that
    returns before the output written during the grace is collected)."""

    async def cancel_with(grace: float):
        service = JobService(stop_grace_seconds=grace)
        job = await service.submit(JobRequest("jobs", "python", CLEANS_UP))
        for _ in range(1200):
            if "working" in job.logs():
                break
            await asyncio.sleep(0.05)
        assert "working" in job.logs(), job.message
        await service.cancel(job.id)
        return job

    graceful = asyncio.run(cancel_with(30.0))
    assert graceful.state == "cancelled" and "cleaned up" in graceful.logs()
    abrupt = asyncio.run(cancel_with(0.0))
    assert abrupt.state == "cancelled" and "cleaned up" not in abrupt.logs()
    for job in (graceful, abrupt):
        assert not leftover_containers(docker_client, job_id=job.id)


class ThreadNotingStore(JobStore):
    """The real store; notes which thread each record or log write runs on."""

    threads: set[int] = set()

    def save_record(self, job_id, record):
        ThreadNotingStore.threads.add(threading.get_ident())
        super().save_record(job_id, record)

    def append_output(self, job_id, chunks):
        ThreadNotingStore.threads.add(threading.get_ident())
        super().append_output(job_id, chunks)


def test_a_chatty_job_is_stored_without_file_io_on_the_event_loop(job_config, tmp_path):
    """A job printing 3000 lines: its record and log reach the store, and not one write
    ran on the event loop's thread (guards: store writes on the loop, issue 13)."""
    code = "for i in range(3000):\n    print('line', i, flush=True)\n"

    async def go():
        service = JobService(store_dir=str(tmp_path / "store"), store_class=ThreadNotingStore)
        job = await service.submit(JobRequest("jobs", "python", code))
        await service.wait(job.id)
        await service.writer.flush()
        return job, threading.get_ident(), service.writer.batches

    ThreadNotingStore.threads = set()
    job, loop_thread, batches = asyncio.run(go())
    assert job.state == "succeeded", job.message
    assert ThreadNotingStore.threads and loop_thread not in ThreadNotingStore.threads
    ((stored, _),) = ThreadNotingStore(tmp_path / "store").load_all()
    assert stored.state == "succeeded" and stored.logs() == job.logs()
    assert stored.logs().count("\n") == 3000
    print(f"\n{len(job.output)} chunks written in {batches} batches")


def test_values_load_only_in_the_process_that_submitted_the_job(job_config, tmp_path):
    """The submitting service hands back the --out values (through its store too); a
    service that took the same job over from the store holds the values as bytes and
    refuses to load them (guards: a server loading the values of jobs it did not submit,
    i.e. other people's code)."""
    store = str(tmp_path / "store")
    service = JobService(store_dir=store)
    code = "import numpy as np\nv = np.arange(3)\nprint('made v')"

    async def go():
        job = await service.submit(JobRequest("jobs", "python", code, outputs=("v",)))
        await service.wait(job.id)
        mine = await jobs.python_result(service, job.id)
        other = JobService(store_dir=store)
        await other.recover()
        kept = await other.result(job.id)
        with pytest.raises(JobError, match="not submitted by this process"):
            await jobs.python_result(other, job.id)
        return mine, kept

    mine, kept = asyncio.run(go())
    np.testing.assert_array_equal(mine["outputs"]["v"], np.arange(3))
    assert isinstance(kept.values, bytes) and kept.document == {
        "ok": True,
        "displays": [],
        "values": ["outputs"],
    }


def test_results_over_their_limits_fail_the_job_naming_the_limit(job_config, docker_client):
    """Guards: a job handing back more than the service keeps (values, or a document with
    huge displays) being read and kept anyway."""
    service = JobService(max_values_bytes=10_000, max_result_bytes=20_000)
    big_values = "import numpy as np\nv = np.zeros(100_000)"
    big_display = "display('x' * 50_000)"

    async def go():
        a = await service.submit(JobRequest("jobs", "python", big_values, outputs=("v",)))
        b = await service.submit(JobRequest("jobs", "python", big_display))
        return await service.wait(a.id), await service.wait(b.id)

    values_job, display_job = asyncio.run(go())
    assert values_job.state == "failed" and "JobService.max_values_bytes" in values_job.message
    assert display_job.state == "failed"
    assert "JobService.max_result_bytes" in display_job.message, display_job.message
    for job in (values_job, display_job):
        assert not leftover_containers(docker_client, job_id=job.id)


def test_files_over_the_limit_are_refused_while_read_and_the_container_still_goes(
    job_config, docker_client
):
    """A folder bigger than the reader's limit (whose size the daemon does not state up
    front) is refused part way, a file too big by its stated size at once, and the
    container is removable right after (guards: the server reading a job's files whole
    into memory, or holding the daemon's archive stream open so removal hangs)."""
    import uuid

    from jupyter_dss_containers import ownership
    from jupyter_dss_containers.backends import backend_for
    from jupyter_dss_containers.backends.base import FilesTooLarge, WorkloadSpec
    from jupyter_dss_containers.config import load_config

    config = load_config(str(job_config)).get("bare")
    backend, job_id = backend_for(config), uuid.uuid4().hex[:12]
    make = "mkdir /tmp/big && for f in a b c; do head -c 3000000 /dev/zero > /tmp/big/$f; done"
    spec = WorkloadSpec(
        name=f"dss-job-{job_id}",
        image=config.image,
        command=["sh", "-c", make],
        labels=ownership.workload_labels("job", "bare", "tester", job_id=job_id),
    )

    async def go():
        ownership.this_process().register()
        workload = await backend.create(spec)
        try:
            deadline = time.monotonic() + 60
            while (await backend.status(workload.id)).running:
                assert time.monotonic() < deadline, "the writer did not finish"
                await asyncio.sleep(0.1)
            with pytest.raises(FilesTooLarge, match="over 1000000 bytes"):
                await backend.read_files(workload.id, "/tmp/big", limit=1_000_000)
            with pytest.raises(FilesTooLarge):
                await backend.read_files(workload.id, "/tmp/big/a", limit=1_000_000)
            found = await backend.read_files(workload.id, "/tmp/big/a", limit=3_000_000)
            assert found == {"a": bytes(3_000_000)}
        finally:
            await backend.remove(workload.id)

    asyncio.run(go())
    assert not leftover_containers(docker_client, job_id=job_id)


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "from jupyter_dss_containers.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_cli_jobs_logs_cancel(job_config, docker_client):
    job = jobs.submit("jobs", "import time\nprint('working', flush=True)\ntime.sleep(60)")
    deadline = time.monotonic() + 60
    while "working" not in jobs.logs(job.id):
        assert time.monotonic() < deadline and not job.done, job.message
        time.sleep(0.1)
    listed = _cli("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert rows[job.id]["config"] == "jobs" and rows[job.id]["state"] == "running"
    assert "working" in _cli("logs", job.id).stdout
    assert _cli("cancel", job.id).returncode == 0
    jobs.wait(job.id, stream=False)
    assert job.state == "failed" and "killed" in job.message
    assert not leftover_containers(docker_client, job_id=job.id)
    missing = _cli("logs", "nosuchjob")
    assert missing.returncode == 1 and "no running job 'nosuchjob'" in missing.stderr


def test_unknown_config_is_a_clear_error(job_config):
    with pytest.raises(JobError, match="no execution configuration named 'nope'"):
        jobs.submit("nope", "print(1)")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
