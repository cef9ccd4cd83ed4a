"""The fake API server's HTTP side: the routes the official client calls, answered from the
store (with admission at create time and the armed faults) in the real server's shapes."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
import uuid
from typing import Any

import docker
import docker.errors
from aiohttp import web

from .admission import admit_pod, secret_refusal
from .faults import Faults
from .kubelet import Kubelet
from .store import API_VERSIONS, KINDS, Store, matches, now

VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-fake",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}
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


def forbidden(kind: str, verb: str, ns: str) -> web.Response:
    """RBAC's refusal, worded as a real API server words it."""
    group = API_VERSIONS.get(kind, "v1").rpartition("/")[0]
    resource = f"{kind}.{group}" if group else kind
    return status(
        403,
        "Forbidden",
        f'{resource} is forbidden: User "fake-user" cannot {verb} resource "{kind}" '
        f'in API group "{group}" in the namespace "{ns}"',
    )


class Api:
    """Request handlers over one cluster's store, faults and kubelet."""

    def __init__(
        self,
        store: Store,
        faults: Faults,
        kubelet: Kubelet,
        denied: set[tuple[str, str]],
        reported: dict[str, float],
    ):
        self.store, self.faults, self.kubelet = store, faults, kubelet
        self.denied = denied  # (verb, resource) SSARs answer "no" to
        self.reported = reported

    def app(self) -> web.Application:
        app = web.Application(client_max_size=3 * 1024 * 1024)  # the real server's limit
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/version/", self.version)
        r.add_get("/api/v1/namespaces", self.list_namespaces)
        r.add_post("/api/v1/namespaces", self.create_namespace)
        r.add_get("/api/v1/namespaces/{ns}", self.read_namespace)
        r.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self.access_review)
        r.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self.pod_log)
        r.add_get("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}", self.pod_metrics)
        for base in (
            "/api/v1/namespaces/{ns}/{kind}",
            "/apis/networking.k8s.io/v1/namespaces/{ns}/{kind}",
        ):
            r.add_get(base, self.list_or_watch)
            r.add_post(base, self.create)
            r.add_get(base + "/{name}", self.read)
            r.add_patch(base + "/{name}", self.patch)
            r.add_delete(base + "/{name}", self.delete)
        return app

    # ------------------------------------------------------------------ cluster-wide

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(VERSION)

    async def list_namespaces(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": list(self.store.namespaces.values()),
            }
        )

    async def read_namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["ns"]
        if name not in self.store.namespaces:
            return status(404, "NotFound", f'namespaces "{name}" not found')
        return web.json_response(self.store.namespaces[name])

    async def create_namespace(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.store.namespaces:
            return status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        ns = self.store.add_namespace(name)
        ns["metadata"]["labels"].update(body["metadata"].get("labels") or {})
        return web.json_response(ns, status=201)

    async def access_review(self, request: web.Request) -> web.Response:
        body = await request.json()
        attrs = body["spec"]["resourceAttributes"]
        allowed = (attrs.get("verb"), attrs.get("resource")) not in self.denied
        body["status"] = {"allowed": allowed}
        if not allowed:
            body["status"]["reason"] = "denied by the fake cluster's policy"
        body["metadata"] = {"creationTimestamp": None}
        return web.json_response(body, status=201)

    # ------------------------------------------------------------------ namespaced

    def _check(self, request: web.Request, verb: str) -> tuple[str, str] | web.Response:
        """(namespace, kind) of the request, or the answer that refuses it."""
        ns, kind = request.match_info["ns"], request.match_info["kind"]
        if kind not in KINDS or request.path.startswith("/apis/") != (kind in API_VERSIONS):
            return status(404, "NotFound", f"the server could not find the resource {kind}")
        failure = self.faults.failure(kind, verb)
        if failure == 403:
            return forbidden(kind, verb, ns)
        if failure is not None:
            return status(
                failure, "InternalError", "Internal error occurred: injected by the fake cluster"
            )
        if ns not in self.store.namespaces:
            return status(404, "NotFound", f'namespaces "{ns}" not found')
        return ns, kind

    def _existing(self, request: web.Request, verb: str) -> web.Response | tuple:
        """(namespace, kind, name, object) the request names, or the error answer."""
        checked = self._check(request, verb)
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        name = request.match_info["name"]
        obj = self.store.objects[kind].get((ns, name))
        if obj is None:
            return status(404, "NotFound", f'{kind} "{name}" not found')
        return ns, kind, name, obj

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        watching = request.query.get("watch") in _TRUE
        checked = self._check(request, "watch" if watching else "list")
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        q = request.query
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            if meta["namespace"] != ns or not matches(meta.get("labels") or {}, labels):
                return False
            return not fields or fields == f"metadata.name={meta['name']}"

        if not watching:
            return web.json_response(
                {
                    "apiVersion": API_VERSIONS.get(kind, "v1"),
                    "kind": KINDS[kind] + "List",
                    "metadata": {"resourceVersion": str(self.store.rv)},
                    "items": [o for o in self.store.objects[kind].values() if wanted(o)],
                }
            )
        return await self._watch_request(request, kind, wanted)

    async def _watch_request(
        self, request: web.Request, kind: str, wanted: Any
    ) -> web.StreamResponse:
        q = request.query
        since = q.get("resourceVersion") or ""
        expire = self.faults.take(self.faults.gone, kind, "gone")
        too_old = f"too old resource version: {since or 0} ({self.store.rv})"
        if expire == "http":
            return status(410, "Expired", too_old)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expire == "event":  # what a real API server does: 200, then an ERROR event
            gone = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
            gone.update(message=too_old, reason="Expired", code=410)
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            await response.write_eof()
            return response
        drop_after = self.faults.take(self.faults.drops, kind, "drop")
        timeout = float(q.get("timeoutSeconds") or 300)
        with contextlib.suppress(ConnectionError):  # the client stopped watching
            await self._watch(response, kind, wanted, int(since or 0), timeout, drop_after)
        if drop_after is not None and request.transport is not None:
            request.transport.abort()  # no last chunk: the client sees a broken stream
        return response

    async def _watch(
        self,
        response: web.StreamResponse,
        kind: str,
        wanted: Any,
        since: int,
        timeout: float,
        drop_after: int | None = None,
    ) -> None:
        sent = 0
        store = self.store
        if not since:  # a watch from "now" starts with the current objects
            for obj in [o for o in store.objects[kind].values() if wanted(o)]:
                if sent == drop_after:
                    return
                await _send(response, "ADDED", obj)
                sent += 1
            since = store.rv
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for rv, k, event, obj in [e for e in store.events if e[0] > since]:
                if k == kind and wanted(obj):
                    if sent == drop_after:
                        return
                    await _send(response, event, obj)
                    sent += 1
                since = rv
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            async with store.changed:
                if store.rv > since:  # stored while we were writing: no wait
                    continue
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(store.changed.wait(), timeout=left)
        await response.write_eof()

    async def read(self, request: web.Request) -> web.Response:
        found = self._existing(request, "get")
        if isinstance(found, web.Response):
            return found
        return web.json_response(found[3])

    async def patch(self, request: web.Request) -> web.Response:
        found = self._existing(request, "patch")
        if isinstance(found, web.Response):
            return found
        ns, kind, name, obj = found
        patch = await request.json()
        obj = copy.deepcopy(obj)
        obj["metadata"].update(patch.get("metadata", {}))
        return web.json_response(await self.store.put(kind, obj, "MODIFIED"))

    async def create(self, request: web.Request) -> web.Response:
        checked = self._check(request, "create")
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        if (ns, name) in self.store.objects[kind]:
            return status(409, "AlreadyExists", f'{kind} "{name}" already exists')
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now())
        if kind == "secrets" and (refused := secret_refusal(name, obj)):
            return status(422, "Invalid", refused)
        if kind == "pods":
            refused = admit_pod(self.store, ns, obj)
            if refused:
                self.reported[name] = asyncio.get_running_loop().time()
                return status(403, "Forbidden", f'pods "{name}" is forbidden: {refused}')
            obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        stored = await self.store.put(kind, obj, "ADDED")
        if kind == "pods":
            self.kubelet.spawn(self.kubelet.run_pod(ns, name))
        return web.json_response(stored, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        found = self._existing(request, "delete")
        if isinstance(found, web.Response):
            return found
        ns, kind, name, obj = found
        if kind != "pods":
            await self.store.put(kind, obj, "DELETED")
            return web.json_response(
                {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}
            )
        grace = int(
            request.query.get("gracePeriodSeconds")
            or obj["spec"].get("terminationGracePeriodSeconds", 30)
        )
        obj = copy.deepcopy(obj)
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            await self.store.put("pods", obj, "MODIFIED")
            self.kubelet.spawn(self.kubelet.terminate(ns, name, grace))
        return web.json_response(obj)

    # ------------------------------------------------------------------ pods' output

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
        if (ns, name) not in self.store.objects["pods"]:
            return status(404, "NotFound", f'pods "{name}" not found')
        tail = int(request.query["tailLines"]) if "tailLines" in request.query else "all"
        follow = request.query.get("follow") in _TRUE
        try:
            container = await asyncio.to_thread(self.kubelet.container, ns, name)
        except docker.errors.NotFound:
            if follow:
                return status(
                    400,
                    "BadRequest",
                    f'container "kernel" in pod "{name}" is waiting to start: ContainerCreating',
                )
            return web.Response(text="", content_type="text/plain")
        if not follow:
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


async def _send(response: web.StreamResponse, event: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")


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
