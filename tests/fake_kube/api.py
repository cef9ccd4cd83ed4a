"""The fake API server's HTTP side: the routes the official client calls, answered from the
store (with admission at create time, the armed faults on every route, owner-reference
garbage collection after deletes) in the real server's shapes and words."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import uuid
from typing import Any

from aiohttp import web

from . import claims, daemonsets
from . import patch as patches
from .admission import admit_pod, secret_refusal
from .authn import DEFAULT_TOKEN, authenticator
from .faults import Faults
from .garbage import GarbageCollector
from .kubelet import Kubelet
from .nodes import Nodes
from .podoutput import PodOutput, bad_request, status
from .portforward import PortForwarder
from .rbac import Rbac
from .selectors import SelectorError, field_matcher, label_matcher, labels_problem, name_problem
from .store import API_VERSIONS, KINDS, RESOURCE_NAMES, Store, now
from .validation import invalid, precondition_conflict, update_refusal

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
#: fault/RBAC resource -> (resource, API group) as RBAC names them
_GROUPS = {
    "networkpolicies": ("networkpolicies", "networking.k8s.io"),
    "selfsubjectaccessreviews": ("selfsubjectaccessreviews", "authorization.k8s.io"),
    "podmetrics": ("pods", "metrics.k8s.io"),
    "daemonsets": ("daemonsets", "apps"),
}
#: handler -> the resource its faults are armed on (namespaced kinds: the URL's kind)
_ROUTES = {
    "version": ("version", "get"),
    "list_namespaces": ("namespaces", "list"),
    "create_namespace": ("namespaces", "create"),
    "read_namespace": ("namespaces", "get"),
    "patch_namespace": ("namespaces", "patch"),
    "access_review": ("selfsubjectaccessreviews", "create"),
    "pod_log": ("pods/log", "get"),
    "pod_metrics": ("podmetrics", "get"),
    "pod_portforward": ("pods/portforward", "create"),
    "list_nodes": ("nodes", "list"),
    "read_node": ("nodes", "get"),
}
_VERBS = {"read": "get", "create": "create", "patch": "patch", "delete": "delete"}


def forbidden(resource: str, verb: str, ns: str | None, name: str | None = None) -> web.Response:
    """RBAC's refusal, worded as a real API server words it."""
    if resource == "version":
        message = f'forbidden: User "fake-user" cannot {verb} path "/version"'
        return status(403, "Forbidden", message)
    rbac, group = _GROUPS.get(resource, (resource, ""))
    who = f"{rbac}.{group}" if group else rbac
    if name:
        who += f' "{name}"'
    where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
    return status(
        403,
        "Forbidden",
        f'{who} is forbidden: User "fake-user" cannot {verb} resource "{rbac}" '
        f'in API group "{group}" {where}',
    )


def route_of(request: web.Request) -> tuple[str, str, str | None, str | None]:
    """(resource, verb, namespace, name) a request is for, as faults and RBAC see it."""
    info = request.match_info
    handler = getattr(info.handler, "__name__", "")
    ns, name = info.get("ns"), info.get("name")
    if handler in _ROUTES:
        resource, verb = _ROUTES[handler]
        return resource, verb, ns if resource not in ("namespaces", "version") else None, name
    if handler == "list_or_watch":
        verb = "watch" if request.query.get("watch") in _TRUE else "list"
        return info.get("kind", ""), verb, ns, None
    return info.get("kind", ""), _VERBS.get(handler, handler), ns, name


class Api:
    """Request handlers over one cluster's store, faults and kubelet."""

    def __init__(
        self,
        store: Store,
        faults: Faults,
        kubelet: Kubelet,
        denied: set[tuple[str, str]],
        reported: dict[str, float],
        tokens: set[str] | None = None,
    ):
        self.store, self.faults, self.kubelet = store, faults, kubelet
        self.tokens = tokens if tokens is not None else {DEFAULT_TOKEN}  # bearer tokens known
        self.denied = denied  # (verb, resource) SSARs answer "no" to
        self.reported = reported
        self.output = PodOutput(store, kubelet)
        self.rbac = Rbac(store, self.tokens)  # service-account tokens' Roles (:mod:`.rbac`)
        self.forwarder = PortForwarder(store, kubelet)
        self.collector = GarbageCollector(store, self._collect)
        store.on_change.append(self._changed)
        self.nodes = Nodes(store, kubelet.nodes, kubelet.docker)  # Node objects, images
        kubelet.fits = self.nodes.fits
        self.daemonsets = daemonsets.DaemonSetController(store, kubelet, self.nodes, self._collect)
        store.on_change += [self.nodes.changed, self.daemonsets.changed]

    def app(self) -> web.Application:
        middlewares = [authenticator(self.tokens), self.rbac.middleware(route_of), self._faults]
        app = web.Application(client_max_size=3 * 1024 * 1024, middlewares=middlewares)
        r = app.router
        r.add_get("/version", self.version)
        r.add_get("/version/", self.version)
        r.add_get("/api/v1/namespaces", self.list_namespaces)
        r.add_post("/api/v1/namespaces", self.create_namespace)
        r.add_get("/api/v1/namespaces/{ns}", self.read_namespace)
        r.add_patch("/api/v1/namespaces/{ns}", self.patch_namespace)
        r.add_post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self.access_review)
        r.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self.output.pod_log)
        metrics = "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}"
        r.add_get(metrics, self.output.pod_metrics)
        portforward = "/api/v1/namespaces/{ns}/pods/{name}/portforward"
        r.add_get(portforward, self.forwarder.pod_portforward)
        r.add_get("/api/v1/nodes", self.nodes.list_nodes)
        r.add_get("/api/v1/nodes/{name}", self.nodes.read_node)
        for base in (
            "/api/v1/namespaces/{ns}/{kind}",
            "/apis/networking.k8s.io/v1/namespaces/{ns}/{kind}",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/{kind}",
            "/apis/apps/v1/namespaces/{ns}/{kind}",
        ):
            r.add_get(base, self.list_or_watch)
            r.add_post(base, self.create)
            r.add_get(base + "/{name}", self.read)
            r.add_patch(base + "/{name}", self.patch)
            r.add_delete(base + "/{name}", self.delete)
        return app

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The faults a test armed, on every route, before the route answers."""
        resource, verb, ns, name = route_of(request)
        failure = self.faults.failure(resource, verb)
        if failure == 403:
            return forbidden(resource, verb, ns, name)
        if failure is not None:
            message = "Internal error occurred: injected by the fake cluster"
            return status(failure, "InternalError", message)
        return await handler(request)

    def _changed(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        if event == "DELETED" or obj["metadata"].get("ownerReferences"):
            self.collector.schedule()

    # ------------------------------------------------------------------ cluster-wide

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(VERSION)

    async def list_namespaces(self, request: web.Request) -> web.Response:
        try:
            labels = label_matcher(request.query.get("labelSelector"))
            fields = field_matcher("namespaces", request.query.get("fieldSelector"))
        except SelectorError as exc:
            return bad_request(str(exc))
        items = [
            n
            for n in self.store.namespaces.values()
            if labels(n["metadata"].get("labels") or {}) and fields(n)
        ]
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )

    async def read_namespace(self, request: web.Request) -> web.Response:
        name = request.match_info["ns"]
        if name not in self.store.namespaces:
            return status(404, "NotFound", f'namespaces "{name}" not found')
        return web.json_response(self.store.namespaces[name])

    async def create_namespace(self, request: web.Request) -> web.Response:
        body = await request.json()
        meta = body.get("metadata") or {}
        name = meta.get("name", "")
        problem = name_problem(name, dns_label=True) or labels_problem(meta.get("labels") or {})
        if problem:
            return invalid("namespaces", name, problem)
        if name in self.store.namespaces:
            return status(409, "AlreadyExists", f'namespaces "{name}" already exists')
        ns = self.store.add_namespace(name)
        ns["metadata"]["labels"].update(meta.get("labels") or {})
        if meta.get("annotations"):
            ns["metadata"]["annotations"] = dict(meta["annotations"])
        return web.json_response(ns, status=201)

    async def patch_namespace(self, request: web.Request) -> web.Response:
        """Labels and annotations of a namespace (its Pod Security level, say)."""
        name = request.match_info["ns"]
        ns = self.store.namespaces.get(name)
        if ns is None:
            return status(404, "NotFound", f'namespaces "{name}" not found')
        patched = await self._patched(request, "namespaces", ns)
        if isinstance(patched, web.Response):
            return patched
        self.store.rv += 1
        patched["metadata"]["resourceVersion"] = str(self.store.rv)
        patched["metadata"]["labels"]["kubernetes.io/metadata.name"] = name
        self.store.namespaces[name] = patched
        return web.json_response(patched)

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

    def _kind(self, request: web.Request) -> tuple[str, str] | web.Response:
        """(namespace, kind) of the request, or the 404 of an unknown resource.

        The namespace need not exist: a list answers an empty list there, a read 404 for
        the object, as a real API server does; only a create needs the namespace.
        """
        ns, kind = request.match_info["ns"], request.match_info["kind"]
        group = f"/apis/{API_VERSIONS[kind]}/" if kind in API_VERSIONS else "/api/v1/"
        if kind not in KINDS or not request.path.startswith(group):
            return status(404, "NotFound", "the server could not find the requested resource")
        return ns, kind

    def _existing(self, request: web.Request) -> web.Response | tuple:
        """(namespace, kind, name, object) the request names, or the error answer."""
        checked = self._kind(request)
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        name = request.match_info["name"]
        obj = self.store.objects[kind].get((ns, name))
        if obj is None:
            return status(404, "NotFound", f'{RESOURCE_NAMES[kind]} "{name}" not found')
        return ns, kind, name, obj

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        checked = self._kind(request)
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        q = request.query
        try:
            labels = label_matcher(q.get("labelSelector"))
            fields = field_matcher(kind, q.get("fieldSelector"))
        except SelectorError as exc:
            return bad_request(str(exc))

        def wanted(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            return meta["namespace"] == ns and labels(meta.get("labels") or {}) and fields(obj)

        if q.get("watch") not in _TRUE:
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
        """Events from ``since``; an object that comes to match the selectors is ADDED, one
        that stops matching is DELETED, as the API server's watch filter does."""
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
            for rv, k, event, obj, before in [e for e in store.events if e[0] > since]:
                since = rv
                if k != kind:
                    continue
                seen = _filtered(event, wanted(obj), wanted(before))
                if seen is None:
                    continue
                if sent == drop_after:
                    return
                await _send(response, seen, obj)
                sent += 1
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
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        return web.json_response(found[3])

    async def _patched(
        self, request: web.Request, kind: str, obj: dict[str, Any]
    ) -> dict[str, Any] | web.Response:
        """``obj`` with the request's patch applied (in its content type), or the refusal."""
        content_type = request.content_type
        if content_type == patches.APPLY_PATCH:
            message = "the fake API server does not implement server-side apply"
            return status(415, "UnsupportedMediaType", message)
        if content_type not in (
            patches.JSON_PATCH,
            patches.MERGE_PATCH,
            patches.STRATEGIC_MERGE_PATCH,
        ):
            return status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml, application/strategic-merge-patch+json",
            )
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return bad_request(f"error decoding patch: {exc}")
        try:
            new = patches.apply(content_type, obj, body)
        except patches.PatchError as exc:
            return status(exc.status, "BadRequest" if exc.status == 400 else "Invalid", str(exc))
        return update_refusal(kind, obj, new) or new

    async def patch(self, request: web.Request) -> web.Response:
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        ns, kind, name, obj = found
        patched = await self._patched(request, kind, obj)
        if isinstance(patched, web.Response):
            return patched
        return web.json_response(await self.store.put(kind, patched, "MODIFIED"))

    async def create(self, request: web.Request) -> web.Response:
        checked = self._kind(request)
        if isinstance(checked, web.Response):
            return checked
        ns, kind = checked
        if ns not in self.store.namespaces:
            return status(404, "NotFound", f'namespaces "{ns}" not found')
        obj = await request.json()
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name", "")
        problem = name_problem(name) or labels_problem(meta.get("labels") or {})
        if problem:
            return invalid(kind, name, problem)
        if (ns, name) in self.store.objects[kind]:
            return status(409, "AlreadyExists", f'{RESOURCE_NAMES[kind]} "{name}" already exists')
        meta.pop("resourceVersion", None)
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now())
        if kind == "secrets" and (refused := secret_refusal(name, obj)):
            return status(422, "Invalid", refused)
        if kind == claims.KIND:
            if refused := claims.claim_refusal(name, obj):
                return status(422, "Invalid", refused)
            claims.bind(obj)
        if kind == daemonsets.KIND and (refused := daemonsets.admit(name, obj)):
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
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        ns, kind, name, obj = found
        raw = await request.read()
        try:
            options = json.loads(raw) if raw else {}
        except ValueError as exc:
            return bad_request(f"error decoding DeleteOptions: {exc}")
        options = options or {}
        q = request.query
        conflict = precondition_conflict(kind, name, obj, options.get("preconditions") or {})
        if conflict:
            return status(409, "Conflict", conflict)
        propagation = q.get("propagationPolicy") or options.get("propagationPolicy")
        uid = obj["metadata"]["uid"]
        if propagation == "Orphan":
            await self.collector.orphan(ns, uid)
        elif propagation == "Foreground":
            await self.collector.delete_dependents(ns, uid)
        grace = q.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        return web.json_response(
            await self._delete_object(kind, ns, name, obj, None if grace is None else int(grace))
        )

    async def _delete_object(
        self, kind: str, ns: str, name: str, obj: dict[str, Any], grace: int | None = None
    ) -> dict[str, Any]:
        """Delete as the API does: at once (a Status answers), or for a pod gracefully (the
        pod, marked, answers; the kubelet stops it and then it goes)."""
        if kind != "pods":
            await self.store.put(kind, obj, "DELETED")
            if kind == claims.KIND:  # answers with the claim, as the client expects
                return obj
            details = {"name": name, "kind": kind, "uid": obj["metadata"]["uid"]}
            if kind in API_VERSIONS:
                details["group"] = API_VERSIONS[kind].rpartition("/")[0]
            return {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Success",
                "details": details,
            }
        if grace is None:
            grace = int(obj["spec"].get("terminationGracePeriodSeconds", 30))
        obj = copy.deepcopy(obj)
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = now()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace
            await self.store.put("pods", obj, "MODIFIED")
            self.kubelet.spawn(self.kubelet.terminate(ns, name, grace))
        return obj

    async def _collect(self, kind: str, ns: str, name: str, obj: dict[str, Any]) -> None:
        await self._delete_object(kind, ns, name, obj)


def _filtered(event: str, now_wanted: bool, before_wanted: bool) -> str | None:
    """The event a watch with selectors sends for a change (None: none)."""
    if event != "MODIFIED":
        return event if now_wanted else None
    if now_wanted and before_wanted:
        return "MODIFIED"
    if now_wanted:
        return "ADDED"
    return "DELETED" if before_wanted else None


async def _send(response: web.StreamResponse, event: str, obj: dict[str, Any]) -> None:
    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")
