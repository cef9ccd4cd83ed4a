"""The Backend interface over the trusted launcher's API: a server holding no engine access.

Selected by :func:`..backends.backend_for` when ``$DSS_CONTAINERS_LAUNCHER_URL`` is set (the
server extension exports its ``launcher_url`` there, so host kernels running
``%%container`` inherit it). Credentials: ``$DSS_CONTAINERS_LAUNCHER_SECRET`` (one trusted
server, shared-secret mode), else the hub token ``$JUPYTERHUB_API_TOKEN`` of a single-user
server. Only control calls go through the launcher: kernel connections go straight from
the server to the kernel's ports.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..config import ConfigError, ConfigFile, ExecutionConfig, parse_config
from ..launcherd import wire
from ..ownership import OWNER
from ..transport import FOLDER_LABEL
from .base import (
    Backend,
    BackendError,
    BackendUnavailable,
    FilesTooLarge,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)

#: seconds a fetched config document is reused (kernel spec listings ask often)
CONFIG_TTL = 5.0
_config_cache: dict[tuple[str, str], tuple[float, ConfigFile]] = {}
_config_lock = threading.Lock()


def launcher_url() -> str | None:
    url = os.environ.get(wire.URL_ENV, "").strip()
    return url.rstrip("/") + "/" if url else None


def auth_headers() -> dict[str, str]:
    secret = os.environ.get(wire.SECRET_ENV)
    if secret:
        return {"Authorization": f"Bearer {secret}"}
    token = os.environ.get("JUPYTERHUB_API_TOKEN")
    if token:
        return {"Authorization": f"token {token}"}
    raise BackendUnavailable(
        f"the launcher at {launcher_url()} needs credentials: $JUPYTERHUB_API_TOKEN (under "
        f"JupyterHub) or ${wire.SECRET_ENV}"
    )


def launcher_config() -> ConfigFile | None:
    """The config document the launcher lets this caller see, or None without a launcher.

    Blocking (urllib): callers on an event loop run :func:`..config.load_config` in a
    thread, as they do for a file."""
    url = launcher_url()
    if url is None:
        return None
    source = f"launcher {url}"
    try:
        headers = auth_headers()
    except BackendUnavailable as exc:
        raise ConfigError(source, [("", str(exc))]) from None
    key = (url, headers["Authorization"])
    with _config_lock:
        cached = _config_cache.get(key)
    if cached and time.monotonic() - cached[0] < CONFIG_TTL:
        return cached[1]
    request = urllib.request.Request(url + wire.API + "config", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ConfigError(source, [("", f"HTTP {exc.code}: {_error_text(exc)}")]) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(source, [("", f"cannot reach the launcher: {exc}")]) from None
    config_file = parse_config(body.get("config", {}), source)
    with _config_lock:
        _config_cache[key] = (time.monotonic(), config_file)
    return config_file


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("message"))
    except (ValueError, AttributeError, OSError):
        return exc.reason


class RemoteBackend(Backend):
    """One execution config's workloads, through the launcher."""

    #: the launcher admits each start (per-user limits) while it creates: phase "queued"
    admits_starts = True

    def __init__(self, config: ExecutionConfig, url: str | None = None):
        super().__init__(config)
        self.url = url or launcher_url() or ""
        self.base = f"{self.url}{wire.API}configs/{quote(config.name, safe='')}/"

    def target_key(self) -> tuple[str, ...]:
        return ("remote", self.url, self.config.name)

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        user: str | None = None,
        timeout: float = 120.0,
    ) -> tuple[int, Any]:
        headers = {**auth_headers(), "Content-Type": "application/json"}
        if user and wire.SECRET_ENV in os.environ:
            headers[wire.USER_HEADER] = user
        client = AsyncHTTPClient(force_instance=True, max_body_size=2 * wire.MAX_BODY_BYTES)
        try:
            response = await client.fetch(
                HTTPRequest(
                    self.base + path,
                    method=method,
                    headers=headers,
                    body=None if body is None else json.dumps(body),
                    allow_nonstandard_methods=True,
                    connect_timeout=10,
                    request_timeout=timeout,
                ),
                raise_error=False,
            )
        except OSError as exc:
            raise BackendUnavailable(f"the launcher at {self.url} is unreachable: {exc}") from None
        finally:
            client.close()
        if response.code == 599:
            raise BackendUnavailable(f"the launcher at {self.url} is unreachable: {response.error}")
        try:
            data = json.loads(response.body) if response.body else None
        except ValueError:
            data = None
        return response.code, data

    async def _ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        status, data = await self._call(method, path, body, **kwargs)
        if status >= 400:
            raise wire.error_from(status, data)
        return data

    def _w(self, workload_id: str, what: str = "") -> str:
        return f"workloads/{quote(workload_id, safe='')}" + (f"/{what}" if what else "")

    async def _or_missing(self, method: str, path: str, body: Any = None) -> Any:
        """The answer, or None when the launcher says there is no such workload (404)."""
        status, data = await self._call(method, path, body)
        if status == 404:
            return None
        if status >= 400:
            raise wire.error_from(status, data)
        return data

    # ------------------------------------------------------------------ interface

    async def create(self, spec: WorkloadSpec) -> Workload:
        if spec.host_folder:
            if not spec.ports:
                raise BackendError(
                    f"execution config {self.config.name!r}: a kernel on ipc sockets cannot "
                    "start through the launcher (it mounts no folder a caller names); give "
                    "this config a network so that its kernels use tcp"
                )
            # a tcp kernel on a daemon of this host: its folder stays the server's, unused
            labels = {k: v for k, v in spec.labels.items() if k != FOLDER_LABEL}
            spec = dataclasses.replace(spec, host_folder=None, labels=labels)
        data = await self._ok(
            "POST", "workloads", wire.spec_to_json(spec), user=spec.labels.get(OWNER), timeout=600
        )
        return wire.workload_from_json(data)

    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        query = urlencode([("port", p) for p in ports])
        data = await self._ok("GET", f"{self._w(workload_id, 'endpoints')}?{query}")
        return data["address"], {int(k): int(v) for k, v in data["ports"].items()}

    async def status(self, workload_id: str) -> WorkloadStatus:
        data = await self._or_missing("GET", self._w(workload_id, "status"))
        if data is None:
            return WorkloadStatus("missing", exit_code=-1, reason="the container was removed")
        return wire.status_from_json(data)

    async def signal(self, workload_id: str, signum: int) -> None:
        await self._or_missing("POST", self._w(workload_id, "signal"), {"signal": int(signum)})

    async def stop(self, workload_id: str, grace_seconds: float) -> None:
        body = {"grace_seconds": float(grace_seconds)}
        await self._or_missing("POST", self._w(workload_id, "stop"), body)

    async def remove(self, workload_id: str) -> None:
        await self._or_missing("DELETE", self._w(workload_id))

    async def logs(self, workload_id: str, tail: int = 50) -> str:
        data = await self._or_missing("GET", f"{self._w(workload_id, 'logs')}?tail={int(tail)}")
        return "" if data is None else data["text"]

    async def stats(self, workload_id: str) -> WorkloadStats:
        data = await self._or_missing("GET", self._w(workload_id, "stats"))
        return WorkloadStats(None, None, None) if data is None else wire.stats_from_json(data)

    async def list(self, labels: dict[str, str]) -> list[Workload]:
        query = urlencode([("label", f"{k}={v}") for k, v in labels.items()])
        data = await self._ok("GET", f"workloads?{query}")
        return [wire.workload_from_json(w) for w in data["workloads"]]

    async def check(self) -> dict[str, str]:
        return {**(await self._ok("GET", "check")), "launcher": self.url}

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        query = urlencode({"path": path, **({} if limit is None else {"limit": limit})})
        try:
            data = await self._or_missing("GET", f"{self._w(workload_id, 'files')}?{query}")
        except BackendError as exc:
            if getattr(exc, "status", None) == 413:  # the launcher's own refusal of the size
                raise FilesTooLarge(str(exc)) from None
            raise
        return {} if data is None else wire.files_from_json(data["files"])

    async def follow_logs(self, workload_id: str) -> AsyncIterator[tuple[str, str]]:
        """The launcher's NDJSON stream of the workload's output, line by line."""
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        pending = b""

        def on_chunk(chunk: bytes) -> None:
            nonlocal pending
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    item = json.loads(line)
                    queue.put_nowait((item["stream"], item["text"]))

        headers = auth_headers()
        client = AsyncHTTPClient(force_instance=True, max_body_size=1 << 50)
        fetch = asyncio.ensure_future(
            client.fetch(
                HTTPRequest(
                    self.base + self._w(workload_id, "follow"),
                    headers=headers,
                    streaming_callback=on_chunk,
                    connect_timeout=10,
                    request_timeout=0,  # a job may run for days
                ),
                raise_error=False,
            )
        )
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, fetch}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                    continue
                getter.cancel()
                while not queue.empty():
                    yield queue.get_nowait()
                response = fetch.result()
                if response.code == 599:
                    raise BackendUnavailable(
                        f"the launcher at {self.url} is unreachable: {response.error}"
                    )
                if response.code >= 400 and response.code != 404:
                    raise wire.error_from(response.code, _json_or_none(response.body))
                return
        finally:
            if not fetch.done():
                fetch.cancel()
            client.close()


def _json_or_none(raw: bytes | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


__all__ = ["BackendError", "RemoteBackend", "launcher_config", "launcher_url"]
