"""Is a kernel still there when its daemon or cluster cannot be asked?

An unreachable Docker daemon is not proof that its kernels died (a daemon with
live-restore keeps them running across its own restart), nor proof that they live (a
daemon that shuts down stops them). The kernel's own heartbeat socket decides: while it
takes a connection (its TCP port, or its ipc socket in the kernel's folder), the
provisioner keeps the kernel; when nothing answers there, the kernel is reported dead,
with the daemon's error as the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def kernel_ports_answer(connection_info: dict[str, Any], timeout: float = 1.0) -> bool:
    """True when the kernel's heartbeat socket accepts a connection (or cannot be probed)."""
    kind = connection_info.get("transport", "tcp")
    ip, port = connection_info.get("ip"), connection_info.get("hb_port")
    if kind not in ("tcp", "ipc") or not ip or not port:
        return True
    try:
        if kind == "ipc":  # jupyter_client's <ip>-<port> socket file
            dial = asyncio.open_unix_connection(f"{ip}-{int(port)}")
        else:
            dial = asyncio.open_connection(ip, int(port))
        _, writer = await asyncio.wait_for(dial, timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class DeferredRemovals:
    """Containers a down daemon could not remove, removed once it answers again.

    A kernel whose daemon went away is cleaned up while the daemon is down; its container
    comes back with the daemon. A kernel manager whose restart failed is dropped by the
    server without a second cleanup, so the retry lives here, in the process.
    """

    def __init__(self, interval: float = 1.0, give_up_after: float = 3600.0):
        self.interval = interval
        self.give_up_after = give_up_after
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def add(self, backend: Any, workload_id: str, log: Any) -> None:
        if workload_id not in self._tasks:
            task = asyncio.get_running_loop().create_task(self._retry(backend, workload_id, log))
            self._tasks[workload_id] = task

    @property
    def pending(self) -> set[str]:
        return set(self._tasks)

    async def _retry(self, backend: Any, workload_id: str, log: Any) -> None:
        from . import ownership
        from .backends import BackendError, BackendUnavailable

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        try:
            while True:
                await asyncio.sleep(self.interval)
                try:
                    await backend.remove(workload_id)
                except BackendUnavailable:
                    if loop.time() < deadline:
                        continue
                    log.warning("gave up removing %s: its daemon stayed away", workload_id)
                except BackendError as exc:
                    log.warning("cannot remove %s: %s", workload_id, exc)
                else:
                    log.info("removed %s now that its daemon answers again", workload_id)
                    ownership.this_process().release(workload_id)
                return
        finally:
            self._tasks.pop(workload_id, None)


deferred_removals = DeferredRemovals()
