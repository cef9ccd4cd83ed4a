"""Waiting for a kernel in a workload to answer: its kernel_info reply, with the workload's
state as the liveness signal.

Shared by the provisioner (a kernel start is over when the kernel answers, within
``ContainerProvisioner.launch_timeout``) and the warm pool (a pooled kernel is handed out
only once it answered, within ``WarmPool.ready_timeout``). Heartbeats are not used: they
call a kernel that takes more than a second to boot dead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient

from .backends.base import WorkloadStatus

#: seconds between two looks at the workload's state while the kernel boots
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
    client.start_channels(hb=False)
    answered = asyncio.ensure_future(client.wait_for_ready(timeout=timeout))
    try:
        while True:
            done, _ = await asyncio.wait({answered}, timeout=POLL_SECONDS)
            if done:
                break
            now = await status()
            if not now.running:
                raise KernelNotReady(
                    f"its workload stopped before the kernel answered: {now.reason or now.state}",
                    now,
                )
        try:
            answered.result()
        except RuntimeError:  # jupyter_client's "Kernel didn't respond in N seconds"
            raise KernelNotReady(f"the kernel did not answer within {setting}") from None
    finally:
        answered.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await answered
        client.stop_channels()
