"""Jobs: Python/R code, plugin recipes and model jobs run to completion in containers.

The blocking API below is what scripts and the ``%%container`` magics use; the
:class:`JobService` underneath is async and also serves the Jupyter server. The service
holds results as data only (:mod:`.results`); :func:`python_result` loads a job's Python
values in the process that submitted it.
"""

from __future__ import annotations

from .api import (
    Evaluation,
    ScoreResult,
    TrainResult,
    cancel,
    evaluate,
    jobs,
    logs,
    python_result,
    result,
    retrain,
    run,
    run_recipe,
    score,
    service,
    submit,
    train,
    wait,
)
from .model import Job, JobError, JobNotFound, JobRequest, RemoteError
from .service import JobService

__all__ = [
    "Evaluation",
    "Job",
    "JobError",
    "JobNotFound",
    "JobRequest",
    "JobService",
    "RemoteError",
    "ScoreResult",
    "TrainResult",
    "cancel",
    "evaluate",
    "jobs",
    "logs",
    "python_result",
    "result",
    "retrain",
    "run",
    "run_recipe",
    "score",
    "service",
    "submit",
    "train",
    "wait",
]
