"""The launcher's HTTP API: the Backend interface per execution config, JSON in and out.

Every route but ``health`` authenticates first; errors are ``{"message", "type"}`` with a
4xx for what the caller got wrong and never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from tornado.iostream import StreamClosedError
from tornado.web import HTTPError, RequestHandler

from ..backends.base import BackendError, BackendUnavailable, FilesTooLarge, ImageMissing
from ..config import ConfigError
from ..errors import ReportedError
from ..permissions import PermissionDenied, check_permission
from . import wire
from .auth import Authenticator
from .policy import Caller, Refused
from .service import Launcher, log

NAME = r"([a-z][a-z0-9-]{0,39})"
#: a workload id in the URL, percent-encoded: a Kubernetes one is ``<namespace>/<pod>``
WORKLOAD = r"([A-Za-z0-9][A-Za-z0-9_.%-]{0,520})"
#: what a decoded workload id may be: a container's id or name, or namespace/pod
WORKLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}(/[a-z0-9][a-z0-9.-]{0,252})?")
MAX_TAIL = 100000


class LauncherHandler(RequestHandler):
    """Authenticates the caller; turns our exceptions into JSON answers."""

    def initialize(self, launcher: Launcher, authenticator: Authenticator) -> None:
        self.launcher = launcher
        self.authenticator = authenticator

    async def caller(self) -> Caller:
        loaded = await self.launcher.load()
        return await self.authenticator.caller(self.request.headers, loaded.config_file)

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API (no cookies): nothing to check."""

    def prepare(self) -> None:
        """A workload id, once decoded, is a container's or namespace/pod, nothing else."""
        if len(self.path_args) > 1 and not WORKLOAD_ID.fullmatch(self.path_args[1]):
            raise Refused(f"not a workload id: {self.path_args[1]!r}", 400)

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def fail(self, status: int, message: str, kind: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(wire.error_body(message, kind)))

    def _handle_request_exception(self, e: BaseException) -> None:
        if self._finished:
            return
        if isinstance(e, Refused):
            self.fail(e.status, str(e), "Refused")
        elif isinstance(e, ConfigError):
            self.fail(503, f"the launcher's config file is unusable: {e}", "BackendError")
        elif isinstance(e, BackendUnavailable):
            self.fail(503, str(e), "BackendUnavailable")
        elif isinstance(e, ImageMissing):
            self.fail(409, str(e), "ImageMissing")
        elif isinstance(e, BackendError):
            self.fail(502, str(e), "BackendError")
        elif isinstance(e, ReportedError):
            self.fail(getattr(e, "status", 400), str(e), type(e).__name__)
        elif isinstance(e, HTTPError):
            self.fail(e.status_code, e.log_message or e.reason or "error", "Refused")
        else:
            log.exception(
                "launcher: unexpected error on %s %s", self.request.method, self.request.path
            )
            self.fail(500, "internal error in the launcher (see its log)", "BackendError")

    def body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(f"the request body is not JSON: {exc}", 400) from None

    def int_arg(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.get_query_argument(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise Refused(f"{name} must be an integer, got {raw!r}", 400) from None
        if not low <= value <= high:
            raise Refused(f"{name} must be between {low} and {high}, got {value}", 400)
        return value


class HealthHandler(LauncherHandler):
    async def get(self) -> None:
        self.send({"status": "ok"})


class ConfigHandler(LauncherHandler):
    async def get(self) -> None:
        caller = await self.caller()
        document = await self.launcher.document_for(caller)
        self.send({"config": document, "user": caller.username, "groups": sorted(caller.groups)})


class UsageHandler(LauncherHandler):
    async def get(self) -> None:
        caller = await self.caller()
        self.send(await self.launcher.usage(caller))


class CheckHandler(LauncherHandler):
    async def get(self, config_name: str) -> None:
        caller = await self.caller()
        loaded = await self.launcher.load()
        config = self.launcher.config(loaded, config_name)
        if not caller.trusted_server:
            try:
                check_permission(caller.identity(), config)
            except PermissionDenied as exc:
                raise Refused(str(exc), 403) from None
        self.send(await self.launcher.backend(config).check())


class WorkloadsHandler(LauncherHandler):
    async def get(self, config_name: str) -> None:
        caller = await self.caller()
        labels = {}
        for item in self.get_query_arguments("label"):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise Refused(f"a label filter is key=value, not {item!r}", 400)
            labels[key] = value
        rows = await self.launcher.list(caller, config_name, labels)
        self.send({"workloads": [wire.workload_to_json(w) for w in rows]})

    _hung_up = False

    def on_connection_close(self) -> None:
        self._hung_up = True  # a start waiting in the budget queue gives up its place

    async def post(self, config_name: str) -> None:
        caller = await self.caller()
        workload = await self.launcher.create(
            caller, config_name, self.body(), gone=lambda: self._hung_up
        )
        self.send(wire.workload_to_json(workload), 201)


class WorkloadHandler(LauncherHandler):
    async def delete(self, config_name: str, workload_id: str) -> None:
        caller = await self.caller()
        backend = await self.launcher.owned(caller, config_name, workload_id)
        await backend.remove(workload_id)
        self.launcher.forget(config_name, workload_id)
        self.send({"removed": workload_id})


class WorkloadActionHandler(LauncherHandler):
    """``status``, ``endpoints``, ``logs``, ``stats``, ``files`` (GET); ``signal``, ``stop``
    (POST): each on one workload the caller owns."""

    async def get(self, config_name: str, workload_id: str, action: str) -> None:
        caller = await self.caller()
        backend = await self.launcher.owned(caller, config_name, workload_id)
        if action == "status":
            self.send(wire.status_to_json(await backend.status(workload_id)))
        elif action == "endpoints":
            ports = []
            for raw in self.get_query_arguments("port"):
                if not raw.isdigit() or not 0 < int(raw) < 65536:
                    raise Refused(f"a port is a number from 1 to 65535, not {raw!r}", 400)
                ports.append(int(raw))
            address, mapping = await backend.endpoints(workload_id, tuple(ports[:16]))
            self.launcher.note_ports(config_name, workload_id, mapping)
            self.send({"address": address, "ports": {str(k): v for k, v in mapping.items()}})
        elif action == "logs":
            tail = self.int_arg("tail", 50, 0, MAX_TAIL)
            self.send({"text": await backend.logs(workload_id, tail=tail)})
        elif action == "stats":
            self.send(wire.stats_to_json(await backend.stats(workload_id)))
        elif action == "files":
            path = self.get_query_argument("path", "")
            if not path.startswith("/") or "\0" in path:
                raise Refused(f"path must be absolute, not {path!r}", 400)
            # the caller's limit, never more than one answer of the launcher carries
            limit = min(self.int_arg("limit", wire.MAX_BODY_BYTES, 0, 2**62), wire.MAX_BODY_BYTES)
            try:
                files = await backend.read_files(workload_id, path, limit=limit)
            except FilesTooLarge as exc:
                raise Refused(str(exc), 413) from None
            self.send({"files": wire.files_to_json(files)})
        else:
            raise Refused(f"no such action: {action}", 404)

    async def post(self, config_name: str, workload_id: str, action: str) -> None:
        caller = await self.caller()
        backend = await self.launcher.owned(caller, config_name, workload_id)
        body = self.body()
        if action == "signal":
            signum = body.get("signal") if isinstance(body, dict) else None
            if not isinstance(signum, int) or not 1 <= signum <= 64:
                raise Refused("signal must be a signal number from 1 to 64", 400)
            await backend.signal(workload_id, signum)
            self.send({"signalled": workload_id})
        elif action == "stop":
            grace = body.get("grace_seconds", 10) if isinstance(body, dict) else None
            if not isinstance(grace, int | float) or not 0 <= grace <= 600:
                raise Refused("grace_seconds must be a number from 0 to 600", 400)
            await backend.stop(workload_id, float(grace))
            self.launcher.admission.freed()  # a stopped workload holds nothing
            self.send({"stopped": workload_id})
        else:
            raise Refused(f"no such action: {action}", 404)


class FollowHandler(LauncherHandler):
    """The workload's output as NDJSON lines (``{"stream", "text"}``) until it exits."""

    async def get(self, config_name: str, workload_id: str) -> None:
        caller = await self.caller()
        backend = await self.launcher.owned(caller, config_name, workload_id)
        self.set_header("Content-Type", "application/x-ndjson")
        stream = backend.follow_logs(workload_id)
        try:
            async for name, text in stream:
                self.write(json.dumps({"stream": name, "text": text}) + "\n")
                await self.flush()
        except StreamClosedError:
            pass  # the caller went away: stop following
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()


def handlers(base_url: str, launcher: Launcher, authenticator: Authenticator) -> list:
    base = base_url.rstrip("/") + "/" + wire.API
    kwargs = {"launcher": launcher, "authenticator": authenticator}
    workload = base + f"configs/{NAME}/workloads/{WORKLOAD}"
    return [
        (base + "health", HealthHandler, kwargs),
        (base + "config", ConfigHandler, kwargs),
        (base + "usage", UsageHandler, kwargs),
        (base + f"configs/{NAME}/check", CheckHandler, kwargs),
        (base + f"configs/{NAME}/workloads", WorkloadsHandler, kwargs),
        (workload, WorkloadHandler, kwargs),
        (workload + "/follow", FollowHandler, kwargs),
        (
            workload + "/(status|endpoints|logs|stats|files|signal|stop)",
            WorkloadActionHandler,
            kwargs,
        ),
    ]
