"""A small Kubernetes API server over real HTTP, with a kubelet on the local Docker engine.

It speaks enough of the core/v1 API for the official client: namespaces, pods, secrets,
resource quotas, limit ranges, self-subject access reviews, list with label and field
selectors, watches (chunked JSON lines from a resourceVersion), pod logs (followed too,
until the container exits) and graceful deletes. Secrets over 1 MiB are refused, as the
real API server refuses them. Quota and LimitRange refusals use the real API server's
wording. The kubelet runs each pod's one container on Docker with the pod's limits and
reports what a real kubelet reports: Unschedulable (node selector), ErrImageNeverPull /
ErrImagePull, Running with a podIP, and termination (OOMKilled, exit codes). Each pod
gets its own loopback address as podIP and publishes its container ports there, so
nothing leaves 127/8. NetworkPolicies (networking.k8s.io/v1) are stored, listed and
deleted, not enforced.

Faults a test can switch on (``cluster.faults``): answer 500 to the next N requests of a
kind and verb, drop a watch connection after N events, answer a watch with 410 Gone (an
ERROR event in the stream, as a real API server does, or the HTTP status).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import docker
import docker.errors
from aiohttp import web
from kubernetes.utils.quantity import parse_quantity

FAKE_LABEL = "fake-kube.test/pod"
MAX_SECRET_SIZE = 1024 * 1024  # the real API server's limit on a Secret's data
KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "resourcequotas": "ResourceQuota",
    "limitranges": "LimitRange",
    "networkpolicies": "NetworkPolicy",
}
API_VERSIONS = {"networkpolicies": "networking.k8s.io/v1"}  # others are core "v1"
VERBS = ("get", "list", "watch", "create", "patch", "delete")


@dataclass
class Faults:
    """Faults armed by a test, each used up as requests hit it (thread-safe)."""

    #: (kind, verb) -> [how many more requests fail, with which HTTP status]
    failing: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: kind -> events each of the next watches sends before its connection drops
    drops: dict[str, list[int]] = field(default_factory=dict)
    #: kind -> how the next watches end at once: "event" (ERROR 410) or "http" (410)
    gone: dict[str, list[str]] = field(default_factory=dict)
    #: what was injected, in order: (fault, kind, verb)
    injected: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, kind: str, verb: str = "any", times: int = 1, status: int = 500) -> None:
        """The next ``times`` requests for ``kind`` (``verb``: one of VERBS or "any") fail."""
        with self.lock:
            self.failing[(kind, verb)] = [times, status]

    def drop_watch(self, kind: str, after_events: int = 1, times: int = 1) -> None:
        with self.lock:
            self.drops.setdefault(kind, []).extend([after_events] * times)

    def expire_watch(self, kind: str, how: str = "event", times: int = 1) -> None:
        with self.lock:
            self.gone.setdefault(kind, []).extend([how] * times)

    def clear(self) -> None:
        with self.lock:
            self.failing.clear()
            self.drops.clear()
            self.gone.clear()
            self.injected.clear()

    def failure(self, kind: str, verb: str) -> int | None:
        """The status to fail this request with, if a fault says so."""
        with self.lock:
            for key in ((kind, verb), (kind, "any")):
                armed = self.failing.get(key)
                if armed and armed[0] > 0:
                    armed[0] -= 1
                    self.injected.append((f"http-{armed[1]}", kind, verb))
                    return armed[1]
        return None

    def take(self, table: dict[str, list[Any]], kind: str, name: str) -> Any:
        with self.lock:
            if table.get(kind):
                self.injected.append((name, kind, "watch"))
                return table[kind].pop(0)
        return None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
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


def _fmt(q: Decimal) -> str:
    for suffix, power in (("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if q >= 1024**power and q % 1024**power == 0:
            return f"{int(q / 1024**power)}{suffix}"
    return str(q.normalize()) if q != int(q) else str(int(q))


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class FakeCluster:
    """One fake cluster: an API server on 127.0.0.1 and a one-node kubelet on Docker."""

    def __init__(self, name: str, docker_client: docker.DockerClient, ip_base: int):
        self.name = name
        self.instance = f"{name}-{os.getpid()}"  # another test process's fake is not ours
        self.docker = docker_client
        self.node_labels = {"kubernetes.io/hostname": f"{name}-node", "kubernetes.io/os": "linux"}
        self.denied: set[tuple[str, str]] = set()  # (verb, resource) SSARs answer "no" to
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, obj)
        self.rv = 0
        self.reported: dict[str, float] = {}  # pod name -> loop time of its failure report
        self.faults = Faults()
        self._ips = (f"127.0.{ip_base}.{i}" for i in range(2, 250))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed: asyncio.Condition | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._dirs: list[str] = []
        self.add_namespace("default")

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self._serve())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fake-kube-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)

    async def _serve(self) -> None:
        self._changed = asyncio.Condition()
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
        r.add_get("/api/v1/namespaces/{ns}/{kind}", self.list_or_watch)
        r.add_post("/api/v1/namespaces/{ns}/{kind}", self.create)
        r.add_get("/api/v1/namespaces/{ns}/{kind}/{name}", self.read)
        r.add_patch("/api/v1/namespaces/{ns}/{kind}/{name}", self.patch)
        r.add_delete("/api/v1/namespaces/{ns}/{kind}/{name}", self.delete)
        net = "/apis/networking.k8s.io/v1/namespaces/{ns}/{kind}"
        r.add_get(net, self.list_or_watch)
        r.add_post(net, self.create)
        r.add_get(net + "/{name}", self.read)
        r.add_patch(net + "/{name}", self.patch)
        r.add_delete(net + "/{name}", self.delete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Remove every container the kubelet made, then stop serving."""
        for container in self.docker.containers.list(
            all=True, filters={"label": f"{FAKE_LABEL}-cluster={self.instance}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        for folder in self._dirs:
            shutil.rmtree(folder, ignore_errors=True)

    def call(self, func: Any, *args: Any) -> Any:
        """Run a coroutine function on the cluster's loop from a test (thread-safe)."""
        return asyncio.run_coroutine_threadsafe(func(*args), self.loop).result(30)

    # ------------------------------------------------------------------ store

    def add_namespace(self, name: str) -> dict[str, Any]:
        self.rv += 1
        ns = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(self.rv),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self.namespaces[name] = ns
        return ns

    async def _store(self, kind: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        key = (meta["namespace"], meta["name"])
        if event == "DELETED":
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = obj
        self.events.append((self.rv, kind, event, copy.deepcopy(obj)))
        async with self._changed:
            self._changed.notify_all()
        return obj

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return [o for (ns, _), o in self.objects["pods"].items() if ns == namespace]

    # ------------------------------------------------------------------ handlers

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
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
        )

    async def list_namespaces(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": str(self.rv)},
                "items": list(self.namespaces.values()),
            }
        )

    async def read_namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["ns"]
        if name not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        return web.json_response(self.namespaces[name])

    async def create_namespace(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.namespaces:
            return _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        ns = self.add_namespace(name)
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

    def _check(self, request: web.Request, verb: str) -> tuple[str, str] | web.Response:
        ns, kind = request.match_info["ns"], request.match_info["kind"]
        if kind not in KINDS or request.path.startswith("/apis/") != (kind in API_VERSIONS):
            return _status(404, "NotFound", f"the server could not find the resource {kind}")
        failure = self.faults.failure(kind, verb)
        if failure == 403:  # RBAC's refusal, worded as a real API server words it
            group = API_VERSIONS.get(kind, "v1").rpartition("/")[0]
            resource = f"{kind}.{group}" if group else kind
            return _status(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "fake-user" cannot {verb} resource "{kind}" '
                f'in API group "{group}" in the namespace "{ns}"',
            )
        if failure is not None:
            return _status(
                failure, "InternalError", "Internal error occurred: injected by the fake cluster"
            )
        if ns not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        return ns, kind

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        watching = request.query.get("watch") in ("true", "True", "1")
        checked = self._check(request, "watch" if watching else "list")
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        q = request.query
        labels, fields = q.get("labelSelector"), q.get("fieldSelector")

        def wanted(obj: dict[str, Any]) -> bool:
            meta = obj["metadata"]
            if meta["namespace"] != ns or not _matches(meta.get("labels") or {}, labels):
                return False
            return not fields or fields == f"metadata.name={meta['name']}"

        if not watching:
            return web.json_response(
                {
                    "apiVersion": API_VERSIONS.get(kind, "v1"),
                    "kind": KINDS[kind] + "List",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": [o for o in self.objects[kind].values() if wanted(o)],
                }
            )
        since = q.get("resourceVersion") or ""
        expire = self.faults.take(self.faults.gone, kind, "gone")
        too_old = f"too old resource version: {since or 0} ({self.rv})"
        if expire == "http":
            return _status(410, "Expired", too_old)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if expire == "event":  # what a real API server does: 200, then an ERROR event
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
            status.update(message=too_old, reason="Expired", code=410)
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            await response.write_eof()
            return response
        drop_after = self.faults.take(self.faults.drops, kind, "drop")
        with contextlib.suppress(ConnectionError):  # the client stopped watching
            await self._watch(response, kind, wanted, int(since or 0), q, drop_after)
        if drop_after is not None and request.transport is not None:
            request.transport.abort()  # no last chunk: the client sees a broken stream
        return response

    async def _watch(
        self,
        response: web.StreamResponse,
        kind: str,
        wanted: Any,
        since: int,
        q: Any,
        drop_after: int | None = None,
    ) -> None:
        sent = 0
        if not since:  # a watch from "now" starts with the current objects
            for obj in [o for o in self.objects[kind].values() if wanted(o)]:
                if sent == drop_after:
                    return
                await self._send(response, "ADDED", obj)
                sent += 1
            since = self.rv
        deadline = asyncio.get_running_loop().time() + float(q.get("timeoutSeconds") or 300)
        while True:
            for rv, k, event, obj in [e for e in self.events if e[0] > since]:
                if k == kind and wanted(obj):
                    if sent == drop_after:
                        return
                    await self._send(response, event, obj)
                    sent += 1
                since = rv
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            async with self._changed:
                if self.rv > since:  # stored while we were writing: no wait
                    continue
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=left)
        await response.write_eof()

    @staticmethod
    async def _send(response: web.StreamResponse, event: str, obj: dict[str, Any]) -> None:
        await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")

    async def pod_metrics(self, request: web.Request) -> web.Response:
        """metrics-server's PodMetrics, from the engine's stats of the pod's container (CPU
        over the engine's own sampling interval, memory without the page cache)."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.objects["pods"]:
            return _status(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found')
        try:
            container = await asyncio.to_thread(self.docker.containers.get, self._cname(ns, name))
            raw = await asyncio.to_thread(container.stats, stream=False)
        except docker.errors.NotFound:
            return _status(404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found')
        cpu, pre = raw.get("cpu_stats") or {}, raw.get("precpu_stats") or {}
        used = (cpu.get("cpu_usage") or {}).get("total_usage", 0)
        before = (pre.get("cpu_usage") or {}).get("total_usage", used)
        system = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cores = (used - before) / system * (cpu.get("online_cpus") or 1) if system > 0 else 0.0
        mem = raw.get("memory_stats") or {}
        memory = mem.get("usage", 0) - (mem.get("stats") or {}).get("total_inactive_file", 0)
        usage = {"cpu": f"{int(cores * 1e9)}n", "memory": f"{max(memory, 0) // 1024}Ki"}
        return web.json_response(
            {
                "kind": "PodMetrics",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": name, "namespace": ns},
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "window": "10s",
                "containers": [{"name": "kernel", "usage": usage}],
            }
        )

    def _existing(self, request: web.Request, verb: str) -> web.Response | tuple:
        """(namespace, kind, name, object) the request names, or the error answer."""
        checked = self._check(request, verb)
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        name = request.match_info["name"]
        obj = self.objects[kind].get((ns, name))
        if obj is None:
            return _status(404, "NotFound", f'{kind} "{name}" not found')
        return ns, kind, name, obj

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
        return web.json_response(await self._store(kind, obj, "MODIFIED"))

    async def create(self, request: web.Request) -> web.Response:
        checked = self._check(request, "create")
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        if (ns, name) in self.objects[kind]:
            return _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
        if kind == "secrets":
            size = sum(len(base64.b64decode(v)) for v in (obj.get("data") or {}).values())
            if size > MAX_SECRET_SIZE:
                return _status(
                    422,
                    "Invalid",
                    f'Secret "{name}" is invalid: data: Too long: '
                    f"must have at most {MAX_SECRET_SIZE} bytes",
                )
        if kind == "pods":
            refused = self._admit_pod(ns, obj)
            if refused:
                self.reported[name] = asyncio.get_running_loop().time()
                return _status(403, "Forbidden", f'pods "{name}" is forbidden: {refused}')
            obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        stored = await self._store(kind, obj, "ADDED")
        if kind == "pods":
            task = asyncio.ensure_future(self._kubelet(ns, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(stored, status=201)

    async def delete(self, request: web.Request) -> web.Response:
        found = self._existing(request, "delete")
        if isinstance(found, web.Response):
            return found
        ns, kind, name, obj = found
        if kind != "pods":
            await self._store(kind, obj, "DELETED")
            return web.json_response(
                {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}
            )
        grace = int(
            request.query.get("gracePeriodSeconds")
            or obj["spec"].get("terminationGracePeriodSeconds", 30)
        )
        obj = copy.deepcopy(obj)
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            await self._store("pods", obj, "MODIFIED")
            task = asyncio.ensure_future(self._terminate(ns, name, grace))
            self._tasks.add(task)
        return web.json_response(obj)

    async def pod_log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (ns, name) not in self.objects["pods"]:
            return _status(404, "NotFound", f'pods "{name}" not found')
        tail = int(request.query["tailLines"]) if "tailLines" in request.query else "all"
        try:
            container = await asyncio.to_thread(self.docker.containers.get, self._cname(ns, name))
        except docker.errors.NotFound:
            if request.query.get("follow") in ("true", "True", "1"):
                return _status(
                    400,
                    "BadRequest",
                    f'container "kernel" in pod "{name}" is waiting to start: ContainerCreating',
                )
            return web.Response(text="", content_type="text/plain")
        if request.query.get("follow") not in ("true", "True", "1"):
            text = (await asyncio.to_thread(container.logs, tail=tail)).decode(errors="replace")
            return web.Response(text=text, content_type="text/plain")
        # follow: the docker log stream (stdout and stderr merged) until the container exits
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

    # ------------------------------------------------------------------ admission

    def _admit_pod(self, ns: str, pod: dict[str, Any]) -> str | None:
        """LimitRange defaults and maxima, then ResourceQuota: the real server's messages."""
        containers = pod["spec"]["containers"]
        for (lns, _), lr in self.objects["limitranges"].items():
            if lns != ns:
                continue
            for item in lr["spec"]["limits"]:
                if item.get("type") != "Container":
                    continue
                for c in containers:
                    res = c.setdefault("resources", {})
                    for src, dst in (("default", "limits"), ("defaultRequest", "requests")):
                        for r, q in (item.get(src) or {}).items():
                            res.setdefault(dst, {}).setdefault(r, q)
                    for r, q in (item.get("max") or {}).items():
                        limit = (res.get("limits") or {}).get(r)
                        if limit is not None and parse_quantity(limit) > parse_quantity(q):
                            return (
                                f"maximum {'memory' if r == 'memory' else r} usage per "
                                f"Container is {q}, but limit is {limit}"
                            )
        for (qns, qname), quota in self.objects["resourcequotas"].items():
            if qns != ns:
                continue
            hard = quota["spec"].get("hard") or {}
            for resource, limit in hard.items():
                requested = self._usage([pod], resource)
                if requested is None:
                    return f"failed quota: {qname}: must specify {resource}"
                used = sum(
                    (self._usage([p], resource) or Decimal(0))
                    for p in self.pods(ns)
                    if p["status"].get("phase") not in ("Succeeded", "Failed")
                )
                if used + requested > parse_quantity(limit):
                    return (
                        f"exceeded quota: {qname}, requested: {resource}={_fmt(requested)}, "
                        f"used: {resource}={_fmt(used)}, limited: {resource}={limit}"
                    )
        return None

    @staticmethod
    def _usage(pods: list[dict[str, Any]], resource: str) -> Decimal | None:
        if resource in ("pods", "count/pods"):
            return Decimal(len(pods))
        kind, _, name = resource.partition(".")
        if kind not in ("limits", "requests"):
            kind, name = "requests", resource
        total = Decimal(0)
        for pod in pods:
            for c in pod["spec"]["containers"]:
                q = ((c.get("resources") or {}).get(kind) or {}).get(name)
                if q is None:
                    return None
                total += parse_quantity(q)
        return total

    # ------------------------------------------------------------------ kubelet

    @staticmethod
    def _cname(ns: str, name: str) -> str:
        return f"fake-kube-{ns}-{name}"

    async def _update_status(self, ns: str, name: str, **status: Any) -> None:
        obj = self.objects["pods"].get((ns, name))
        if obj is None:
            return
        obj = copy.deepcopy(obj)
        obj["status"].update(status)
        await self._store("pods", obj, "MODIFIED")

    def _container_status(self, c: dict[str, Any], state: dict[str, Any], ready: bool = False):
        return [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": ready,
                "state": state,
            }
        ]

    async def _kubelet(self, ns: str, name: str) -> None:
        pod = self.objects["pods"][(ns, name)]
        spec = pod["spec"]
        c = spec["containers"][0]
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            await self._update_status(
                ns,
                name,
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 node(s) didn't match Pod's "
                        "node affinity/selector. preemption: 0/1 nodes are available: "
                        "1 Preemption is not helpful for scheduling.",
                        "lastTransitionTime": _now(),
                    }
                ],
            )
            self.reported[name] = asyncio.get_running_loop().time()
            return
        scheduled = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
        ]
        await self._update_status(ns, name, conditions=scheduled, hostIP="127.0.0.1")
        try:
            await asyncio.to_thread(self.docker.images.get, c["image"])
        except docker.errors.ImageNotFound:
            policy = c.get("imagePullPolicy", "IfNotPresent")
            reason, message = (
                (
                    "ErrImageNeverPull",
                    f'Container image "{c["image"]}" is not present with pull policy of Never',
                )
                if policy == "Never"
                else (
                    "ErrImagePull",
                    f'failed to pull and unpack image "{c["image"]}": '
                    "the fake cluster pulls nothing",
                )
            )
            waiting = {"waiting": {"reason": reason, "message": message}}
            await self._update_status(
                ns, name, containerStatuses=self._container_status(c, waiting)
            )
            self.reported[name] = asyncio.get_running_loop().time()
            return
        ip = next(self._ips)
        try:
            container = await asyncio.to_thread(self._run_container, ns, name, pod, ip)
        except docker.errors.APIError as exc:
            waiting = {"waiting": {"reason": "CreateContainerError", "message": str(exc)}}
            await self._update_status(
                ns, name, containerStatuses=self._container_status(c, waiting)
            )
            return
        started = _now()
        running = {"running": {"startedAt": started}}
        await self._update_status(
            ns,
            name,
            phase="Running",
            podIP=ip,
            podIPs=[{"ip": ip}],
            startTime=started,
            conditions=[*scheduled, {"type": "Ready", "status": "True"}],
            containerStatuses=self._container_status(c, running, ready=True),
        )
        result = await asyncio.to_thread(_wait, container)
        if (ns, name) not in self.objects["pods"]:
            return
        attrs = await asyncio.to_thread(lambda: self.docker.api.inspect_container(container.id))
        state = attrs["State"]
        code = int(state.get("ExitCode", result))
        reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
        terminated = {
            "terminated": {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": _now(),
            }
        }
        await self._update_status(
            ns,
            name,
            phase="Succeeded" if code == 0 else "Failed",
            conditions=[*scheduled, {"type": "Ready", "status": "False"}],
            containerStatuses=self._container_status(c, terminated),
        )
        self.reported[name] = asyncio.get_running_loop().time()

    def _run_container(self, ns: str, name: str, pod: dict[str, Any], ip: str) -> Any:
        spec = pod["spec"]
        c = spec["containers"][0]
        sec = spec.get("securityContext") or {}
        uid, gid = sec.get("runAsUser", 0), sec.get("runAsGroup", 0)
        fs_group = sec.get("fsGroup")
        limits = (c.get("resources") or {}).get("limits") or {}
        kwargs: dict[str, Any] = {}
        if "memory" in limits:
            kwargs["mem_limit"] = kwargs["memswap_limit"] = int(parse_quantity(limits["memory"]))
        if "cpu" in limits:
            kwargs["nano_cpus"] = int(parse_quantity(limits["cpu"]) * 10**9)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        binds: dict[str, dict[str, str]] = {}
        for m in c.get("volumeMounts") or []:
            volume = volumes[m["name"]]
            if "secret" in volume:
                secret = self.objects["secrets"][(ns, volume["secret"]["secretName"])]
                folder = tempfile.mkdtemp(prefix="fake-kube-secret-")
                self._dirs.append(folder)
                mode = volume["secret"].get("defaultMode", 0o644)
                items = volume["secret"].get("items") or [
                    {"key": k, "path": k} for k in secret.get("data", {})
                ]
                for item in items:
                    path = os.path.join(folder, item["path"])
                    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(base64.b64decode(secret["data"][item["key"]]))
                    os.chown(path, 0, fs_group if fs_group is not None else 0)
                    os.chmod(path, mode)
                os.chmod(folder, 0o755)
                binds[folder] = {"bind": m["mountPath"], "mode": "ro"}
            elif volume.get("emptyDir", {}).get("medium") == "Memory" and m["mountPath"] == (
                "/dev/shm"
            ):
                kwargs["shm_size"] = int(parse_quantity(volume["emptyDir"]["sizeLimit"]))
            elif "emptyDir" in volume:  # a real emptyDir is world-writable (0777); the
                # engine ignores the mode over some image folders: the pod's user owns it
                owner = f"uid={uid},gid={fs_group if fs_group is not None else gid}"
                kwargs.setdefault("tmpfs", {})[m["mountPath"]] = (
                    f"rw,nosuid,nodev,{owner},mode=1777"
                )
        csec = c.get("securityContext") or {}
        if csec.get("readOnlyRootFilesystem"):
            kwargs["read_only"] = True
        drop = (csec.get("capabilities") or {}).get("drop") or []
        return self.docker.containers.run(
            c["image"],
            entrypoint=c.get("command"),
            command=c.get("args"),
            name=self._cname(ns, name),
            hostname=name[:63],
            environment={e["name"]: e.get("value", "") for e in c.get("env") or []},
            user=f"{uid}:{gid}",
            group_add=[str(fs_group)] if fs_group is not None else None,
            working_dir=c.get("workingDir"),
            ports={f"{p['containerPort']}/tcp": (ip, p["containerPort"]) for p in c["ports"]},
            volumes=binds,
            cap_drop=drop or None,
            security_opt=["no-new-privileges"]
            if csec.get("allowPrivilegeEscalation") is False
            else None,
            labels={
                FAKE_LABEL: pod["metadata"]["uid"],
                f"{FAKE_LABEL}-cluster": self.instance,
            },
            init=True,
            detach=True,
            **kwargs,
        )

    async def _terminate(self, ns: str, name: str, grace: int) -> None:
        cname = self._cname(ns, name)

        def stop_and_remove() -> None:
            try:
                container = self.docker.containers.get(cname)
            except docker.errors.NotFound:
                return
            with contextlib.suppress(docker.errors.APIError):
                if grace > 0:
                    container.stop(timeout=grace)
                container.remove(force=True)

        await asyncio.to_thread(stop_and_remove)
        obj = self.objects["pods"].get((ns, name))
        if obj is not None:
            await self._store("pods", obj, "DELETED")


def _wait(container: Any) -> int:
    try:
        return int(container.wait().get("StatusCode", -1))
    except (docker.errors.APIError, OSError):
        return -1


def write_kubeconfig(path: str, clusters: dict[str, FakeCluster], current: str) -> None:
    """A kubeconfig with one context per fake cluster (plain HTTP, a bearer token)."""
    import yaml

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": n, "cluster": {"server": c.url}} for n, c in clusters.items()],
        "users": [{"name": "tester", "user": {"token": "fake-token"}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "tester"}} for n in clusters],
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
