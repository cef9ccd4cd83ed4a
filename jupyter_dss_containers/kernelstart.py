"""The steps of one container kernel's start, as functions of plain arguments.

The provisioner strings them together: plan the user's files in the kernel, build its
command, create the workload (a restart waits for a daemon that is coming back), hand the
connection info to the kernel manager, and explain a failure in words a user can act on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import ownership, phases
from .backends import Backend, BackendError, BackendUnavailable, ImageMissing
from .config import ExecutionConfig
from .errors import ReportedError
from .launcher import KernelLaunch, LaunchedKernel, launch_kernel_workload, remove_kernel_workload
from .liveness import deferred_removals
from .readiness import KernelNotReady, until_ready
from .workspace import (
    WorkspaceError,
    WorkspacePlan,
    config_plan,
    notice_script,
    unwritable_told,
)


class WorkspaceRefused(ReportedError, PermissionError):
    """The notebook's folder is not one the kernel may mount (outside the root, a link out)."""

    status = 403


class KernelStartError(ReportedError, RuntimeError):
    """The container kernel could not start; the message says why."""

    status = 503


async def plan_workspace(
    config: ExecutionConfig, username: str, cwd: str | None, manager: Any
) -> WorkspacePlan:
    """The user's files in the kernel: the server's root (the user's own on a multi-user
    server; the working folder outside a server) at the same path, the notebook's folder
    as the working directory. ``manager`` is the server's kernel manager, if any."""
    root_of = getattr(manager, "workspace_root", None)
    root = root_of() if callable(root_of) else getattr(manager, "root_dir", None)

    def planned() -> WorkspacePlan:
        server_root = root if isinstance(root, str) and root else None
        plan = config_plan(config, server_root=server_root, cwd=cwd, user=username)
        return unwritable_told(plan) if cwd else plan  # a notebook's kernel: say it once

    try:
        return await asyncio.to_thread(planned)
    except (WorkspaceError, OSError) as exc:
        raise WorkspaceRefused(f"execution config {config.name!r}: {exc}") from None


def kernel_command(
    kernel_spec: Any, notice: str | None, first_start: bool, died: str | None = None
) -> list[str]:
    """The kernel spec's argv; an IPython kernel's first start also prints the workspace
    notice (not after restarts: told once), and a restart after the kernel died prints why
    (``died``: ``OOM-killed (memory limit 64 MiB)``) as the first stderr line of its first
    cell, where the user who saw "kernel restarted" looks."""
    argv = list(kernel_spec.argv) if kernel_spec else []
    python = kernel_language(kernel_spec) == "python" and "ipykernel" in str(argv)
    if notice and first_start and python:
        argv.append(f"--IPKernelApp.exec_lines={notice_script(notice)}")
    elif died and not first_start and python:
        argv.append(f"--IPKernelApp.exec_lines={notice_script(restart_notice(died))}")
    return argv


def restart_notice(died: str) -> str:
    """What a restarted kernel says first: why the one before it died."""
    return f"dss-containers: the kernel was restarted because it died: {died[:500]}"


def kernel_language(kernel_spec: Any) -> str:
    return (kernel_spec.language or "").lower() if kernel_spec else ""


Log = logging.Logger | logging.LoggerAdapter


async def start_cold(
    backend: Backend,
    launch: KernelLaunch,
    *,
    restart_wait: float,
    timeout: float,
    code_env: str | None,
    base_image: str | None,
    log: Log,
    kernel_id: str,
    tail_lines: int,
) -> LaunchedKernel:
    """A new workload for the kernel, returned once the kernel answered within
    ``timeout`` (``ContainerProvisioner.launch_timeout``), the seconds spent waiting for a
    daemon that is coming back not counted. A kernel that does not answer is removed, and
    :class:`KernelStartError` says why, quoting its last logs (the caller removes a kept
    folder)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    if getattr(backend, "admits_starts", False):  # per-user limits, at the launcher
        phases.BOARD.enter(kernel_id, phases.QUEUED, "at the launcher: per-user limits, create")
    try:
        launched, waited = await launch_with_restart_wait(
            backend, launch, restart_wait, log, kernel_id
        )
        waited += backend.infrastructure_wait(kernel_id)  # a new node: not the kernel's time
    except BackendError as exc:
        message = explain_start_failure(exc, launch.config.name, code_env, base_image)
        raise KernelStartError(phases.BOARD.failed(kernel_id, message)) from None
    phases.BOARD.enter(kernel_id, phases.BOOTING, "waiting for the kernel's first reply")
    try:
        await until_ready(
            launched.connection_info,
            max(timeout - (loop.time() - began - waited), 0.0),
            lambda: backend.status(launched.workload_id),
            f"{timeout:g} s (ContainerProvisioner.launch_timeout)",
        )
    except BaseException as exc:  # a daemon gone while it boots, a cancelled start too
        tail = await log_tail(backend, launched.workload_id, tail_lines)
        await remove_or_defer(backend, launched.workload_id, launched.folder, log)
        if not isinstance(exc, KernelNotReady | BackendError):
            phases.BOARD.failed(kernel_id, f"{type(exc).__name__}: {exc}")
            raise
        raise KernelStartError(
            phases.BOARD.failed(
                kernel_id,
                f"execution config {launch.config.name!r}: container {launched.name}: {exc}; "
                f"it was removed{tail}",
            )
        ) from None
    phases.BOARD.enter(kernel_id, phases.READY, "the kernel answered")
    return launched


async def log_tail(backend: Backend, workload_id: str, lines: int) -> str:
    """``; last log lines:`` and the workload's last lines, or nothing."""
    try:
        tail = await backend.logs(workload_id, tail=lines)
    except BackendError:
        tail = ""
    return "; last log lines:\n" + tail.rstrip() if tail.strip() else ""


async def remove_or_defer(backend: Backend, workload_id: str, folder: str | None, log: Log) -> None:
    """Remove a kernel's workload and folder; a backend that cannot be reached now gets
    the removal retried in the background. The workload is no longer this process's."""
    try:
        await remove_kernel_workload(backend, workload_id, folder)
    except BackendError as exc:
        log.warning("Kernel workload %s: removal deferred: %s", workload_id, exc)
        deferred_removals.add(backend, workload_id, log)
    ownership.this_process().release(workload_id)


async def launch_with_restart_wait(
    backend: Backend,
    launch: KernelLaunch,
    wait_seconds: float,
    log: Log,
    kernel_id: str,
) -> tuple[LaunchedKernel, float]:
    """Create the kernel's workload; when the daemon or cluster is unreachable, try again
    for ``wait_seconds`` (0 for a first start). Returns the kernel and the seconds spent
    waiting for the daemon; raises the last :class:`BackendError`."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + wait_seconds
    while True:
        attempt = loop.time()
        try:
            return await launch_kernel_workload(backend, launch), attempt - began
        except BackendUnavailable as exc:
            if loop.time() >= deadline:
                raise
            log.warning(
                "Kernel %s: restart waits for its daemon (%.0f s left): %s",
                kernel_id,
                deadline - loop.time(),
                exc,
            )
            await asyncio.sleep(1.0)


def explain_start_failure(
    exc: BackendError, config_name: str, code_env: str | None, base_image: str | None
) -> str:
    """The failure, and for a missing image the command that builds it."""
    message = f"execution config {config_name!r}: {exc}"
    if isinstance(exc, ImageMissing) and code_env:
        message += (
            f"; build it with: jupyter dss-containers build-env {code_env} --config {config_name}"
        )
    elif isinstance(exc, ImageMissing) and base_image is not None:
        message += f"; build it with: jupyter dss-containers build-base-image {base_image}"
    return message


def adopt_connection_info(km: Any, info: dict[str, Any]) -> None:
    """Load the kernel's connection info into its manager and write the manager's file
    (blocking), as jupyter_client's ``_reconcile_connection_info`` would; it then finds
    the file written and equal."""
    from jupyter_client.connect import port_names

    km.cleanup_connection_file()  # a restart's stale file, if any
    for name in port_names:
        setattr(km, name, 0)
    km.load_connection_info(info)
    km.write_connection_file()
