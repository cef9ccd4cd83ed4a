"""``GET kernels`` (the caller's container kernels, live) and ``GET kernels/<id>/logs``."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from tornado import web

from ... import ownership, phases
from ...ownership import PREFIX
from ..kernels import does_not_exist
from ..limits import BadInput, whole_number
from .base import DSSAPIHandler, api_error, bounded

#: the labels of :mod:`...backends.docker.placement` (not imported: no docker SDK needed)
DOCKER_HOST, PLACEMENT = PREFIX + "docker-host", PREFIX + "placement"
#: seconds the kernel listing waits for one daemon's answer (listing, then stats)
LIVE_TIMEOUT = 3.0
#: lines a kernel's log route gives by default, and at most
KERNEL_LOG_TAIL = 200
MAX_KERNEL_LOG_TAIL = 5000


def _iso(value: str | None) -> str | None:
    """A workload's start time as ISO 8601 (Docker lists it in epoch seconds)."""
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value), tz=timezone.utc).isoformat()
    return value


def backend_of(provisioner: Any) -> Any:
    """The provisioner's backend, or None before its ``pre_launch`` made one (a pending
    kernel, listed while it starts, has none for a moment)."""
    try:
        return provisioner.backend
    except AssertionError:
        return None


def where_it_runs(provisioner: Any) -> tuple[Any, str | None]:
    """(the backend to ask, the workload's id there): on a config over several daemons,
    the backend of the daemon it runs on, so one dead daemon leaves the others' rows live."""
    backend, workload_id = backend_of(provisioner), provisioner.workload_id
    member_of = getattr(backend, "member_of", None)
    if member_of is not None and workload_id:
        member, container = member_of(workload_id)
        if member is not None:
            return member, container
    return backend, workload_id


def kernel_row(kernel_id: str, manager: Any, provisioner: Any) -> dict[str, Any]:
    """A container kernel as its provisioner and kernel manager know it, before the daemon
    is asked (state ``starting``; live fields None)."""
    row: dict[str, Any] = {
        "id": kernel_id,
        "name": manager.kernel_name,
        "execution_config": provisioner.execution_config,
        "code_env": provisioner.code_env,
        "owner": provisioner.owner,
        "image": provisioner.image,
        "workload_id": provisioner.workload_id,
        "state": "starting",
        #: the last start's phase, its message and its history (see :mod:`...phases`)
        "phase": None,
        "message": None,
        "phases": [],
        "exit_reason": provisioner.exit_reason,
        #: why the kernel last died by itself ({"reason", "at"}), also once it restarted
        "died": getattr(provisioner, "died", None),
        "error": None,
        "started": None,
        "execution_state": getattr(manager, "execution_state", None),
        "last_activity": None,
        "cpu_percent": None,
        "memory_bytes": None,
        "memory_limit": None,
        #: the daemon of a config over several (``docker.hosts``) it runs on, and why
        "host": None,
        "placement": None,
    }
    history = phases.BOARD.fields(kernel_id)
    row.update(phase=history["phase"], message=history["phase_message"], phases=history["phases"])
    backend = backend_of(provisioner)
    progress = backend.start_progress(kernel_id) if backend is not None else None
    if history["phase"] is None and progress is not None:  # a start this process did not see
        row["phase"], row["message"] = progress
    activity = getattr(manager, "last_activity", None)
    if isinstance(activity, datetime):
        row["last_activity"] = activity.isoformat()
    return row


def pending_row(kernel_id: str, history: phases.PhaseHistory) -> dict[str, Any]:
    """A kernel still starting that the kernel manager lists only once it started (without
    pending kernels, JupyterLab's default): its owner sees its phases meanwhile."""
    step = history.current
    return {
        "id": kernel_id,
        "name": history.about.get("name", ""),
        "execution_config": history.about.get("execution_config", ""),
        **dict.fromkeys(("code_env", "image", "workload_id", "exit_reason", "error")),
        "owner": history.owner,
        "state": "starting",
        "phase": step.phase if step else None,
        "message": step.message if step else None,
        "phases": history.rows(),
        "died": None,
        **dict.fromkeys(("started", "execution_state", "last_activity", "cpu_percent")),
        **dict.fromkeys(("memory_bytes", "memory_limit")),
    }


class KernelsHandler(DSSAPIHandler):
    """The caller's container kernels on this server, with state and live CPU/memory."""

    @web.authenticated
    async def get(self) -> None:
        from ...provisioner import ContainerProvisioner

        _, identity = await self.caller()
        mine = []
        for kernel_id in list(self.kernel_manager.list_kernel_ids()):
            try:
                manager = self.kernel_manager.get_kernel(kernel_id)
            except KeyError:  # shut down meanwhile
                continue
            provisioner = getattr(manager, "provisioner", None)
            if not isinstance(provisioner, ContainerProvisioner):
                continue
            if provisioner.owner != identity.username:
                continue
            mine.append((kernel_id, manager, provisioner))

        # One listing per daemon or cluster gives each workload's state and start time.
        backends: dict[Any, Any] = {}
        for _, _, provisioner in mine:
            backend, workload_id = where_it_runs(provisioner)
            if workload_id and backend is not None:
                backends.setdefault(backend.target_key(), backend)
        labels = {ownership.MANAGED: "true", ownership.KIND: "kernel"}
        answers = await asyncio.gather(
            *(bounded(b.list(labels), LIVE_TIMEOUT) for b in backends.values())
        )
        listed: dict[Any, tuple[dict[str, Any], str | None]] = {}
        for key, (workloads, error) in zip(backends, answers, strict=True):
            listed[key] = ({w.id: w for w in workloads or ()}, error)

        rows = await asyncio.gather(*(self._describe(kid, m, p, listed) for kid, m, p in mine))
        listed_ids = {kernel_id for kernel_id, _, _ in mine}
        for kernel_id, history in phases.BOARD.starts_of(identity.username):
            if kernel_id not in listed_ids:
                rows.append(pending_row(kernel_id, history))
        self.send({"user": identity.username, "kernels": rows})

    async def _describe(
        self, kernel_id: str, manager: Any, provisioner: Any, listed: dict[Any, Any]
    ) -> dict[str, Any]:
        row = kernel_row(kernel_id, manager, provisioner)
        backend, workload_id = where_it_runs(provisioner)
        if workload_id is None or backend is None:
            if provisioner.exit_reason:
                row["state"] = "dead"
            return row
        workloads, error = listed.get(backend.target_key(), ({}, "not asked"))
        if error:  # the daemon cannot be asked; what the provisioner knows still holds
            row.update(state="dead" if provisioner.exit_reason else "unknown", error=error)
            return row
        workload = workloads.get(workload_id)
        if workload is None:
            row.update(
                state="dead", exit_reason=provisioner.exit_reason or "the container was removed"
            )
            return row
        row["host"] = workload.labels.get(DOCKER_HOST)
        row["placement"] = workload.labels.get(PLACEMENT)
        row["started"] = _iso(workload.started_at)
        row["image"] = row["image"] or workload.image or None
        if workload.state in ("exited", "dead", "failed", "succeeded"):
            row["state"] = "dead"
            if not row["exit_reason"]:
                status, why = await bounded(backend.status(workload_id), LIVE_TIMEOUT)
                row["exit_reason"] = status.reason if status is not None else why
            return row
        row["state"] = "running" if workload.state in ("running", "paused") else "starting"
        stats, why = await bounded(backend.stats(workload_id), LIVE_TIMEOUT)
        if stats is None:
            row["error"] = why
        else:
            row.update(
                cpu_percent=stats.cpu_percent,
                memory_bytes=stats.memory_bytes,
                memory_limit=stats.memory_limit,
            )
        return row


class KernelLogsHandler(DSSAPIHandler):
    """The last lines a container kernel wrote (the sidebar's Logs button); owner only."""

    @web.authenticated
    async def get(self, kernel_id: str) -> None:
        from ...provisioner import ContainerProvisioner

        _, identity = await self.caller()
        try:
            tail = whole_number(
                self.get_query_argument("tail", str(KERNEL_LOG_TAIL)),
                "tail",
                1,
                MAX_KERNEL_LOG_TAIL,
            )
        except BadInput as exc:
            raise api_error(400, str(exc)) from None
        try:
            manager = self.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            manager = None
        provisioner = getattr(manager, "provisioner", None)
        if (
            not isinstance(provisioner, ContainerProvisioner)
            or provisioner.owner != identity.username
        ):
            raise api_error(404, does_not_exist(kernel_id))  # missing and not yours alike
        reply: dict[str, Any] = {
            "id": kernel_id,
            "workload_id": provisioner.workload_id,
            "logs": "",
            "error": None,
        }
        backend = backend_of(provisioner)
        if provisioner.workload_id and backend is not None:
            text, why = await bounded(backend.logs(provisioner.workload_id, tail), LIVE_TIMEOUT)
            reply.update(logs=text or "", error=why)
        self.send(reply)
