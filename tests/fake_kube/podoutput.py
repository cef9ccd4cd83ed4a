"""What the API server relays from the kubelet about a pod: its log and its metrics.

Logs follow the real path's rules: a pod not yet on a node has an empty log (200); a
container that has not started is refused with the kubelet's 400 (``container "x" in pod
"y" is waiting to start: ContainerCreating``); an unknown or missing container name is a
400 as the API server words it. Metrics are metrics-server's PodMetrics, from the engine's
stats.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import docker
import docker.errors
from aiohttp import web

from .kubelet import Kubelet
from .store import Store

_TRUE = ("true", "True", "1")


def status(code: int, reason: str, message: str) -> web.Response:
    """A ``Status`` failure answer, as the API server gives them."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def bad_request(message: str) -> web.Response:
    return status(400, "BadRequest", message)


def log_refusal(pod: dict[str, Any], container: str | None, previous: bool) -> str | None:
    """Why the log of ``container`` (None: the pod's only one) cannot be read now, in the
    API server's and kubelet's words, or None (readable; "" if not on a node yet)."""
    name, spec = pod["metadata"]["name"], pod["spec"]
    names = [c["name"] for c in spec["containers"]]
    init = [c["name"] for c in spec.get("initContainers") or []]
    if container is None:
        if len(names) > 1:
            choices = " ".join(names)
            return f"a container name must be specified for pod {name}, choose one of: [{choices}]"
        container = names[0]
    if container not in names + init:
        return f"container {container} is not valid for pod {name}"
    if not spec.get("nodeName"):
        return None  # no node: no location, an empty log
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    found = next((s for s in statuses if s["name"] == container), None)
    if found is None:
        return f'container "{container}" in pod "{name}" is not available'
    if previous:
        return f'previous terminated container "{container}" in pod "{name}" not found'
    waiting = (found.get("state") or {}).get("waiting")
    if waiting is None:
        return None
    reason = waiting.get("reason") or "ContainerCreating"
    words = {
        "ErrImagePull": "image can't be pulled",
        "ImagePullBackOff": "trying and failing to pull image",
    }.get(reason, reason)
    return f'container "{container}" in pod "{name}" is waiting to start: {words}'


class PodOutput:
    """The log and metrics routes over one cluster's store and kubelet."""

    def __init__(self, store: Store, kubelet: Kubelet):
        self.store, self.kubelet = store, kubelet

    async def pod_metrics(self, request: web.Request) -> web.Response:
        """metrics-server's PodMetrics, from the engine's stats of the pod's container (CPU
        over the engine's own sampling interval, memory without the page cache)."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        missing = status(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found')
        if (ns, name) not in self.store.objects["pods"]:
            return missing
        try:
            container = await asyncio.to_thread(self.kubelet.container, ns, name)
            raw = await asyncio.to_thread(container.stats, stream=False)
        except docker.errors.NotFound:
            return missing
        return web.json_response(
            {
                "kind": "PodMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": name, "namespace": ns},
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "window": "10s",
                "containers": [{"name": "kernel", "usage": usage_of(raw)}],
            }
        )

    async def pod_log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.store.objects["pods"].get((ns, name))
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        q = request.query
        refused = log_refusal(pod, q.get("container"), q.get("previous") in _TRUE)
        if refused:
            return bad_request(refused)
        if not pod["spec"].get("nodeName"):
            return web.Response(text="", content_type="text/plain")
        tail = int(q["tailLines"]) if "tailLines" in q else "all"
        try:
            container = await asyncio.to_thread(self.kubelet.container, ns, name)
        except docker.errors.NotFound:  # its status says it ran, the engine lost it
            first = pod["spec"]["containers"][0]["name"]
            return bad_request(f'container "{first}" in pod "{name}" is terminated')
        if q.get("follow") not in _TRUE:
            text = (await asyncio.to_thread(container.logs, tail=tail)).decode(errors="replace")
            return web.Response(text=text, content_type="text/plain")
        return await _follow_log(request, container, name, tail)


def usage_of(raw: dict[str, Any]) -> dict[str, str]:
    """A container's CPU (cores over the engine's sampling interval) and memory (without
    the page cache) from the engine's stats, as PodMetrics quantities."""
    cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
    used = (cpu.get("cpu_usage") or {}).get("total_usage", 0)
    before = (pre.get("cpu_usage") or {}).get("total_usage", used)
    system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cores = (used - before) / system * (cpu.get("online_cpus") or 1) if system > 0 else 0.0
    mem = raw.get("memory_stats") or {}
    memory = mem.get("usage", 0) - (mem.get("stats") or {}).get("total_inactive_file", 0)
    return {"cpu": f"{int(cores * 1e9)}n", "memory": f"{max(memory, 0) // 1024}Ki"}


async def _follow_log(
    request: web.Request, container: Any, name: str, tail: int | str
) -> web.StreamResponse:
    """The docker log stream (stdout and stderr merged) until the container exits."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for chunk in container.logs(stream=True, follow=True, tail=tail):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except (docker.errors.APIError, OSError):
            pass  # removed meanwhile: the log ends there
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name=f"fake-log-{name}", daemon=True).start()
    with contextlib.suppress(ConnectionError):  # the client stopped following
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
        await response.write_eof()
    return response
