"""GPU allocation on a Docker daemon, the I/O: list the daemon's GPUs from its own host
(``nvidia-smi -L`` in a throw-away container, cached per daemon), read which ones the
workloads of this product hold (their labels), confirm a creation against a race with
another server, and make a start wait its turn (:class:`GpuLine`) when none are free.

The choices themselves are the pure functions of :mod:`.gpus`. Blocking functions here
run in the backend's worker threads; :class:`GpuLine` lives on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import DeviceRequest

from ...config import DockerSettings
from ...ownership import MANAGED, PREFIX
from ..base import BackendError
from . import gpus as g

T = TypeVar("T")

#: a probe container's label (not ``managed``: no reaper or listing counts it)
PROBE = PREFIX + "gpu-probe"
#: seconds a daemon's GPU list is trusted (GPUs do not come and go on a running host)
PROBE_TTL = 600.0
#: seconds the probe container may run
PROBE_TIMEOUT = 60

_probed: dict[str, tuple[float, list[g.Gpu]]] = {}
_probe_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def probe_request(settings: DockerSettings) -> dict[str, Any]:
    """The probe's ``HostConfig`` keyword arguments: every GPU, utilities only, no network,
    nothing else allowed."""
    args: dict[str, Any] = {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "network_mode": "none",
    }
    if settings.runtime:
        args["runtime"] = settings.runtime
    if settings.gpu_request == "device_request":
        args["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu", "utility"]])]
    return args


def daemon_gpus(
    client: docker.DockerClient, settings: DockerSettings, url: str, image: str
) -> list[g.Gpu]:
    """The GPUs of the daemon's host, probed once per :data:`PROBE_TTL` (blocking)."""
    with _guard:
        lock = _probe_locks.setdefault(url, threading.Lock())
    with lock:
        cached = _probed.get(url)
        if cached and time.monotonic() - cached[0] < PROBE_TTL:
            return cached[1]
        found = g.parse_gpu_list(_run_probe(client, settings, url, image))
        _probed[url] = (time.monotonic(), found)
        return found


def forget_probe(url: str) -> None:
    """The next start on the daemon probes its GPUs again."""
    _probed.pop(url, None)


def _run_probe(client: docker.DockerClient, settings: DockerSettings, url: str, image: str) -> str:
    api = client.api
    image = settings.gpu_probe_image or image
    host_config = api.create_host_config(**probe_request(settings))
    try:
        container = api.create_container(
            image,
            command=list(settings.gpu_probe_command),
            labels={PROBE: "true"},
            environment={"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "utility"},
            host_config=host_config,
            detach=True,
        )["Id"]
    except docker.errors.ImageNotFound:
        raise BackendError(
            f"the GPU probe image {image} is not on the Docker daemon at {url}"
        ) from None
    try:
        api.start(container)
        result = api.wait(container, timeout=PROBE_TIMEOUT)
        out = api.logs(container, stdout=True, stderr=True).decode("utf-8", "replace")
    except docker.errors.APIError as exc:
        raise BackendError(
            f"the GPU probe on the Docker daemon at {url} could not run "
            f"({' '.join(settings.gpu_probe_command)}): {exc.explanation or exc}; "
            "does this daemon have the NVIDIA container toolkit?"
        ) from None
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(container, force=True)
    if result.get("StatusCode") != 0:
        raise BackendError(
            f"the GPU probe on the Docker daemon at {url} ({' '.join(settings.gpu_probe_command)}) "
            f"exited {result.get('StatusCode')}: {out.strip()[-300:]}"
        )
    return out


def current_holders(api: docker.APIClient) -> list[g.Holder]:
    """The containers of this product holding GPUs on the daemon (blocking)."""
    rows = api.containers(all=True, filters={"label": [f"{MANAGED}=true", g.GPU_IDS]})
    return g.holders(rows)


def allocate(
    client: docker.DockerClient, settings: DockerSettings, url: str, image: str
) -> tuple[str, ...]:
    """Free device ids for a ``gpus: N`` start, or :class:`.gpus.GPUsBusy` (blocking)."""
    count = int(settings.gpus)  # type: ignore[arg-type]
    found = daemon_gpus(client, settings, url, image)
    taken = g.held(current_holders(client.api))
    ids = g.choose(found, taken, count)
    if ids is None:
        never = count > len(found)
        raise g.GPUsBusy(
            g.busy_message(found, taken, count, f"the Docker daemon at {url}"),
            queue=settings.gpu_on_busy == "queue" and not never,
        )
    return ids


class LostRace(Exception):
    """Another server's container, created earlier, holds one of the ids: try again."""


def confirm(api: docker.APIClient, container: str, ids: tuple[str, ...]) -> None:
    """Keep the ids only if no earlier-created container holds one of them (blocking):
    :class:`LostRace` otherwise (the caller removes its container)."""
    rivals = [h for h in current_holders(api) if h.id != container and set(h.ids) & set(ids)]
    if not rivals:
        return
    exact = []  # the listing's times are whole seconds: the inspect's are nanoseconds
    for h in [*rivals, g.Holder(container, ids, 0, "created", "")]:
        with contextlib.suppress(docker.errors.NotFound):
            created = g.created_ns(api.inspect_container(h.id).get("Created", ""))
            exact.append(g.Holder(h.id, h.ids, created, h.state, h.what))
    mine = next((h for h in exact if h.id == container), None)
    if mine is None:
        raise BackendError(f"container {container[:12]} was removed while it was being made")
    winner = g.lost_to(mine, exact)
    if winner is not None:
        raise LostRace(
            f"GPU(s) {', '.join(sorted(set(ids) & set(winner.ids)))} went to {winner.what}"
        )


class GpuLine:
    """The starts waiting for GPUs on one daemon, first come first served in this process;
    other servers' frees are seen by looking again every ``poll`` seconds."""

    def __init__(self, poll: float = 2.0) -> None:
        self.poll = poll
        self._line: list[int] = []
        self._next = 0
        self._freed = asyncio.Event()

    def freed(self) -> None:
        self._freed.set()
        self._freed = asyncio.Event()

    def position(self, ticket: int) -> int:
        return self._line.index(ticket) + 1 if ticket in self._line else 0

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        timeout: float,
        report: Callable[[str], None],
        what: str = "GPUs",
    ) -> tuple[T, float]:
        """``attempt()`` once this start is first in line, again whenever GPUs may have
        freed, until it does not raise a queueing :class:`.gpus.GPUsBusy`; (its result,
        seconds waited). ``report`` gets the waiting message. ``timeout`` 0: one attempt,
        at once, not in line (a start that refuses does not wait behind one that queues)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        if timeout <= 0:  # refuse: now or never, whoever waits (a race is still checked)
            return await attempt(), 0.0
        ticket, self._next = self._next, self._next + 1
        self._line.append(ticket)
        why = f"an earlier start waits for {what} here"
        try:
            while True:
                wake = self._freed
                if self._line[0] == ticket:
                    try:
                        return await attempt(), loop.time() - began
                    except g.GPUsBusy as exc:
                        if not exc.queue:
                            raise
                        why = str(exc)
                left = began + timeout - loop.time()
                if left <= 0:
                    raise g.GPUsBusy(f"waited {timeout:g} s for {what} and none freed: {why}")
                report(f"waiting for {what}, position {self.position(ticket)} in line: {why}")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(left, self.poll))
        finally:
            self._line.remove(ticket)
            self.freed()  # the next in line looks now


_lines: dict[tuple[int, str], GpuLine] = {}


def line_for(url: str) -> GpuLine:
    """The waiting line of a daemon, one per event loop."""
    key = (id(asyncio.get_running_loop()), url)
    if key not in _lines:
        _lines[key] = GpuLine()
    return _lines[key]


def wake(url: str) -> None:
    """A workload on the daemon was stopped or removed: the waiting starts look again."""
    with contextlib.suppress(RuntimeError):
        key = (id(asyncio.get_running_loop()), url)
        if key in _lines:
            _lines[key].freed()
