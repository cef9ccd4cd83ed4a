"""What crosses the launcher's API: JSON shapes of specs, workloads, statuses and errors.

Shared by the service (:mod:`.handlers`) and its client (:mod:`..backends.remote`), so the
two cannot drift. Private files travel base64-encoded in the request body, never in a URL,
a header or a log line.
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Any

from ..backends.base import (
    BackendError,
    BackendUnavailable,
    ImageMissing,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)

API = "api/"
#: environment variables a single-user server and its host kernels read
URL_ENV = "DSS_CONTAINERS_LAUNCHER_URL"
SECRET_ENV = "DSS_CONTAINERS_LAUNCHER_SECRET"
#: shared-secret mode only: the user the trusted server acts for (ignored under a hub)
USER_HEADER = "X-DSS-Containers-User"
#: the largest request body the launcher reads (job inputs travel as files)
MAX_BODY_BYTES = 256 * 1024**2


class LauncherRefused(BackendError):
    """The launcher refused the call (permission, budget, bad request, no such workload)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


#: error type names the service sends and the client raises again
ERROR_TYPES: dict[str, type[BackendError]] = {
    "BackendUnavailable": BackendUnavailable,
    "ImageMissing": ImageMissing,
    "BackendError": BackendError,
}


def error_body(message: str, kind: str) -> dict[str, str]:
    return {"message": message, "type": kind}


def error_from(status: int, body: Any) -> BackendError:
    """The exception a client raises for an error answer of the launcher."""
    message = body.get("message") if isinstance(body, dict) else None
    kind = body.get("type") if isinstance(body, dict) else None
    message = message or f"the launcher answered HTTP {status}"
    if kind in ERROR_TYPES:
        return ERROR_TYPES[kind](f"{message}")
    if status >= 500 and status != 501:
        return BackendUnavailable(f"launcher: {message}")
    return LauncherRefused(message, status)


def spec_to_json(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "image": spec.image,
        "command": list(spec.command),
        "labels": dict(spec.labels),
        "env": dict(spec.env),
        "files": {p: base64.b64encode(c).decode() for p, c in spec.files.items()},
        "ports": list(spec.ports),
        "host_ports": {str(k): v for k, v in spec.host_ports.items()},
        # the folder the caller would like to start in; the launcher mounts the user's own
        # workspace root itself, and refuses a folder outside it
        "working_dir": spec.working_dir or _planned_dir(spec),
    }


def _planned_dir(spec: WorkloadSpec) -> str | None:
    plan = spec.workspace
    return plan.working_dir if plan is not None and plan.mounted else None


def spec_from_json(data: dict[str, Any]) -> WorkloadSpec:
    """A spec from a body already validated against ``launcher.schema.json``."""
    return WorkloadSpec(
        name=data["name"],
        image=data["image"],
        command=list(data["command"]),
        labels=dict(data.get("labels", {})),
        env=dict(data.get("env", {})),
        files={p: base64.b64decode(c, validate=True) for p, c in data.get("files", {}).items()},
        ports=tuple(data.get("ports", ())),
        host_ports={int(k): int(v) for k, v in data.get("host_ports", {}).items()},
        working_dir=data.get("working_dir"),
    )


def workload_to_json(w: Workload) -> dict[str, Any]:
    return asdict(w)


def workload_from_json(data: dict[str, Any]) -> Workload:
    return Workload(
        id=data["id"],
        name=data["name"],
        labels=dict(data.get("labels", {})),
        image=data.get("image", ""),
        state=data.get("state", "unknown"),
        started_at=data.get("started_at"),
    )


def status_to_json(s: WorkloadStatus) -> dict[str, Any]:
    return asdict(s)


def status_from_json(data: dict[str, Any]) -> WorkloadStatus:
    return WorkloadStatus(
        state=data["state"],
        exit_code=data.get("exit_code"),
        reason=data.get("reason"),
        oom_killed=bool(data.get("oom_killed", False)),
    )


def stats_to_json(s: WorkloadStats) -> dict[str, Any]:
    return asdict(s)


def stats_from_json(data: dict[str, Any]) -> WorkloadStats:
    return WorkloadStats(
        data.get("cpu_percent"), data.get("memory_bytes"), data.get("memory_limit")
    )


def files_to_json(files: dict[str, bytes]) -> dict[str, str]:
    return {p: base64.b64encode(c).decode() for p, c in files.items()}


def files_from_json(data: dict[str, str]) -> dict[str, bytes]:
    return {p: base64.b64decode(c) for p, c in data.items()}
