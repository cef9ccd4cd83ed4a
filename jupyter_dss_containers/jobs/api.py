"""The blocking Python API (and what the magics call): jobs from a script or a kernel.

A :class:`JobService` runs on an event loop in a background thread, so the caller's
thread (a kernel executing a cell) only waits: it prints the job's output as it
arrives, and a KeyboardInterrupt (the kernel's interrupt) cancels the job and removes
its container before it propagates.

This is the one place where a job's Python values (its cloudpickled ``values.pkl``) are
loaded, and R output tables become DataFrames: in the caller's own process (their kernel),
for jobs this process's service submitted, never for a job taken over from a store. The
service, and so the Jupyter server, only holds those bytes.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import io
import pickle
import sys
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .model import Job, JobError, JobRequest
from .phaseecho import PhaseEcho
from .recipes import recipe_request
from .service import JobService

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_service: JobService | None = None


def _run(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="dss-jobs", daemon=True).start()
            atexit.register(_cancel_all)
    return asyncio.run_coroutine_threadsafe(coro, _loop)


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each call at once in the caller's thread: at exit, thread pools refuse work."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _cancel_all() -> None:
    """At exit (a kernel shut down), cancel this process's jobs and remove its pooled job
    runners, so no container outlives it."""
    if _service is None:
        return
    if all(j.done for j in _service.list()) and not _service.job_pool.held():
        return  # nothing to cancel, no pooled runner to remove

    async def shutdown(service: JobService) -> None:
        asyncio.get_running_loop().set_default_executor(_InlineExecutor(max_workers=1))
        await service.shutdown()

    with contextlib.suppress(Exception):
        _run(shutdown(_service)).result(timeout=30)


def _call(coro: Coroutine[Any, Any, T]) -> T:
    return _run(coro).result()


def service() -> JobService:
    """The process's job service (configure it before the first job, e.g. its limits),
    built with the running application as its parent (a kernel's IPKernelApp), so that
    ``c.JobService.*`` in that application's config (``ipython_kernel_config.py``) applies."""
    global _service
    with _lock:
        if _service is None:
            _service = JobService(parent=_running_application())
    return _service


def _running_application() -> Any:
    """The process's traitlets Application (a kernel's, IPython's), if one was started."""
    from traitlets.config import Application

    return Application.instance() if Application.initialized() else None


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """A model fitted in the container, how long fitting took, and its training metrics."""

    model: Any
    train_seconds: float
    metrics: dict[str, float]
    task: str
    job_id: str = ""


@dataclass
class ScoreResult:
    predictions: Any
    probabilities: Any = None
    job_id: str = ""


@dataclass
class Evaluation:
    """Metrics as a table (and, for classification, a confusion matrix and its plot)."""

    task: str
    metrics: Any  # a pandas DataFrame with columns metric, value
    confusion_matrix: Any = None
    labels: list[Any] = field(default_factory=list)
    plot_png: bytes | None = None
    job_id: str = ""

    def _repr_html_(self) -> str:
        html = f"<b>{self.task} metrics</b>" + self.metrics.to_html(index=False)
        if self.plot_png:
            data = base64.b64encode(self.plot_png).decode()
            html += f'<br><img alt="confusion matrix" src="data:image/png;base64,{data}"/>'
        return html


# --------------------------------------------------------------------------- jobs


def submit(
    config: str,
    code: str,
    *,
    inputs: dict[str, Any] | None = None,
    outputs: Iterable[str] = (),
    lang: str = "python",
    env: str | None = None,
) -> Job:
    """Queue Python or R code; returns the job at once (see :func:`wait`, :func:`result`)."""
    if lang not in ("python", "r"):
        raise ValueError(f"lang must be 'python' or 'r', not {lang!r}")
    request = JobRequest(
        config=config,
        kind=lang,
        code=code,
        inputs=dict(inputs or {}),
        outputs=tuple(outputs),
        code_env=env,
        name=f"{lang} cell",
    )
    return _submit(request)


def _submit(request: JobRequest) -> Job:
    """Submit; an interrupt meanwhile cancels the job once the submission is through."""
    future = _run(service().submit(request))
    try:
        return future.result()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            _call(service().cancel(future.result(timeout=60).id))
        raise


def wait(job_id: str, stream: bool = True, phases: bool = False) -> Job:
    """Wait for a job, printing its output (and with ``phases``, a slow start's phases, as
    ``%%container`` does) as they come; Ctrl-C / interrupt cancels it."""
    job = service().get(job_id)
    future = _run(service().wait(job_id))
    seen, echo = 0, PhaseEcho(job_id)
    try:
        while True:
            try:
                future.result(timeout=0.05)
                break
            except concurrent.futures.TimeoutError:
                pass
            finally:
                if stream and phases:
                    echo()
                seen = _echo(job, seen) if stream else seen
    except KeyboardInterrupt:
        _call(service().cancel(job_id))
        raise
    return job


def _echo(job: Job, seen: int) -> int:
    chunks, upto = job.output_since(seen)
    for stream, text in chunks:
        (sys.stderr if stream == "stderr" else sys.stdout).write(text)
    if chunks:
        sys.stdout.flush()
        sys.stderr.flush()
    return upto


def run(config: str, code: str, **kwargs: Any) -> dict[str, Any]:
    """Run code to completion and return its ``outputs`` by name (raises its error)."""
    job = submit(config, code, **kwargs)
    wait(job.id)
    return result(job.id)["outputs"]


def result(job_id: str) -> Any:
    """A finished job's result with its Python values (raises the job's error, remote
    traceback included)."""
    return _call(python_result(service(), job_id))


async def python_result(jobs_service: JobService, job_id: str) -> dict[str, Any]:
    """The finished job's result as a dict: its document's fields, ``displays``, and its
    Python values loaded (``outputs``, ``model``, ...; an R job's ``outputs`` as
    DataFrames). Only for a job ``jobs_service`` submitted, in the submitter's process:
    loading values runs code from the job's image."""
    found = await jobs_service.result(job_id)
    if not jobs_service.submitted_here(job_id):
        raise JobError(
            f"job {job_id} was not submitted by this process: its Python values are "
            "loaded only in the kernel that submitted it"
        )
    if found is None:
        raise JobError(f"job {job_id}: its result was not kept")
    out: dict[str, Any] = dict(found.document)
    out.setdefault("displays", [])
    if found.values is not None:
        values = pickle.loads(found.values)  # the caller's own job, in the caller's process
        if not isinstance(values, dict):
            raise JobError(f"job {job_id}: its values file holds no dict of values")
        out.update(values)
    if "tables" in found.document:  # an R job: its --out data frames (maybe none)
        import pandas as pd

        out["outputs"] = {n: pd.read_csv(io.BytesIO(data)) for n, data in found.tables.items()}
    return out


def cancel(job_id: str) -> Job:
    """Cancel a job; returns once its container is gone."""
    return _call(service().cancel(job_id))


def jobs() -> list[dict[str, Any]]:
    """This process's jobs, newest last, as rows."""
    return [j.summary() for j in service().list()]


def logs(job_id: str) -> str:
    return service().get(job_id).logs()


def run_recipe(
    config: str, name: str, params: dict[str, Any] | None = None, env: str | None = None
) -> Any:
    """Run a plugin recipe by name in a container and return what it returned."""
    job = _submit(recipe_request(config, name, params, env))
    wait(job.id)
    return result(job.id)["value"]


# --------------------------------------------------------------------------- models


def _model_job(config: str, env: str | None, operation: dict[str, Any]) -> tuple[dict, str]:
    request = JobRequest(
        config=config,
        kind="model",
        code_env=env,
        operation=operation,
        name=f"model:{operation['action']}",
    )
    job = _submit(request)
    wait(job.id)
    return result(job.id), job.id


def train(
    config: str,
    estimator: Any,
    X: Any,
    y: Any,
    *,
    task: str | None = None,
    fit_params: dict[str, Any] | None = None,
    env: str | None = None,
) -> TrainResult:
    """Fit ``estimator`` (a scikit-learn estimator or pipeline, an XGBoost model) in the
    container; returns the fitted model, the fitting time and training metrics."""
    op = {"action": "train", "model": estimator, "X": X, "y": y, "task": task}
    op["fit_params"] = fit_params
    out, job_id = _model_job(config, env, op)
    return TrainResult(out["model"], out["train_seconds"], out["metrics"], out["task"], job_id)


def retrain(config: str, model: Any, X: Any, y: Any, **kwargs: Any) -> TrainResult:
    """Fit an already trained model again, with its parameters, on new data."""
    op = {"action": "retrain", "model": model, "X": X, "y": y, "task": kwargs.get("task")}
    op["fit_params"] = kwargs.get("fit_params")
    out, job_id = _model_job(config, kwargs.get("env"), op)
    return TrainResult(out["model"], out["train_seconds"], out["metrics"], out["task"], job_id)


def score(
    config: str, model: Any, X: Any, *, chunk_size: int = 10_000, env: str | None = None
) -> ScoreResult:
    """Predictions (and class probabilities when the model has them), computed in chunks."""
    op = {"action": "score", "model": model, "X": X, "chunk_size": chunk_size}
    out, job_id = _model_job(config, env, op)
    return ScoreResult(out["predictions"], out["probabilities"], job_id)


def evaluate(
    config: str,
    model: Any,
    X: Any,
    y: Any,
    *,
    task: str | None = None,
    chunk_size: int = 10_000,
    env: str | None = None,
) -> Evaluation:
    """A metrics table, classification or regression by ``task`` (default: the model's)."""
    import numpy as np
    import pandas as pd

    op = {"action": "evaluate", "model": model, "X": X, "y": y, "task": task}
    op["chunk_size"] = chunk_size
    out, job_id = _model_job(config, env, op)
    table = pd.DataFrame(list(out["metrics"].items()), columns=["metric", "value"])
    png = out.get("confusion_matrix_png")
    matrix = out.get("confusion_matrix")
    return Evaluation(
        out["task"],
        table,
        None if matrix is None else np.asarray(matrix),
        out.get("labels", []),
        base64.b64decode(png) if png else None,
        job_id,
    )
