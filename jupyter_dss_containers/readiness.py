"""Waiting for a kernel in a workload to answer: its kernel_info reply, with the workload's
state as the liveness signal.

Shared by the provisioner (a kernel start is over when the kernel answers, within
``ContainerProvisioner.launch_timeout``) and the warm pool (a pooled kernel is handed out
only once it answered, within ``WarmPool.ready_timeout``). Heartbeats are not used: they
call a kernel that takes more than a second to boot dead. Only the shell channel is
opened: the kernel's client (the server's, the user's) checks iopub itself, and flushing
it here would add a fifth of a second to every start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient

from .backends.base import WorkloadStatus

#: seconds between two kernel_info requests, and looks at the workload's state
POLL_SECONDS = 0.5


class KernelNotReady(RuntimeError):
    """The kernel gave no kernel_info reply in time, or its workload stopped first."""

    def __init__(self, message: str, status: WorkloadStatus | None = None):
        super().__init__(message)
        #: the workload's state when it stopped before answering (None: it timed out)
        self.status = status


async def until_ready(
    connection_info: dict[str, Any],
    timeout: float,
    status: Callable[[], Awaitable[WorkloadStatus]],
    setting: str,
) -> None:
    """Return once the kernel answers kernel_info; raise :class:`KernelNotReady` when it
    has not within ``timeout`` seconds (the message says ``within {setting}``: the
    configured value and its trait) or when ``status()`` says its workload stopped."""
    client = AsyncKernelClient()
    client.load_connection_info(connection_info)
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            client.kernel_info()  # again each time: one sent too early may be lost
            try:
                reply = await client.shell_channel.get_msg(timeout=POLL_SECONDS)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                return  # to this request or an earlier one: it is up all the same
            now = await status()
            if not now.running:
                raise KernelNotReady(
                    f"its workload stopped before the kernel answered: {now.reason or now.state}",
                    now,
                )
            if loop.time() >= deadline:
                raise KernelNotReady(f"the kernel did not answer within {setting}")
    finally:
        client.stop_channels()
