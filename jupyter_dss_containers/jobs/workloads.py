"""Job containers seen from outside the process that runs them (the CLI): by their labels.

A job's record lives in the process that submitted it; its container carries the job
id, owner and config as labels, so ``jobs``, ``logs`` and ``cancel`` find it anywhere.
"""

from __future__ import annotations

from typing import Any

from .. import ownership
from ..backends import Backend, BackendError, backend_for
from ..backends.base import Workload
from ..config import ConfigFile
from .model import JobNotFound


async def job_workloads(config_file: ConfigFile) -> tuple[list[tuple[Backend, Workload]], dict]:
    """Every job container on the daemons/clusters of the file's configs, and the skipped
    ones ({config name: why})."""
    seen: set[Any] = set()
    found, skipped = [], {}
    for config in config_file.execution_configs.values():
        backend = backend_for(config)
        if backend.target_key() in seen:
            continue
        seen.add(backend.target_key())
        try:
            rows = await backend.list({ownership.MANAGED: "true", ownership.KIND: "job"})
        except BackendError as exc:
            skipped[config.name] = str(exc)
            continue
        found.extend((backend, w) for w in rows)
    return found, skipped


async def find_job(config_file: ConfigFile, job_id: str) -> tuple[Backend, Workload]:
    found, _ = await job_workloads(config_file)
    for backend, workload in found:
        if workload.labels.get(ownership.JOB_ID) == job_id:
            return backend, workload
    raise JobNotFound(f"no running job {job_id!r} on the daemons of {config_file.source}")


def row(workload: Workload) -> dict[str, Any]:
    labels = workload.labels
    return {
        "id": labels.get(ownership.JOB_ID, ""),
        "config": labels.get(ownership.CONFIG, ""),
        "code_env": labels.get(ownership.CODE_ENV),
        "owner": labels.get(ownership.OWNER, ""),
        "state": workload.state,
        "container": workload.name,
        "image": workload.image,
    }
