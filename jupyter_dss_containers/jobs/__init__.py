"""Jobs: Python/R code, plugin recipes and model jobs run to completion in containers.

The blocking API below is what scripts and the ``%%container`` magics use; the
:class:`JobService` underneath is async and also serves the Jupyter server.
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
