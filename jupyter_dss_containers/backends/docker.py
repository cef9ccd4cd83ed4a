"""The Docker backend: workloads as containers, through the docker SDK.

Every SDK call is blocking, so each runs in a worker thread of the backend's own pool: the
Jupyter server's event loop never waits on the daemon, and twenty kernels starting at once
do not queue behind the loop's small default pool.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import io
import ipaddress
import os
import re
import socket
import tarfile
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import docker.tls
from docker.types import DeviceRequest
from docker.types import Mount as DockerMount

from .. import transport
from ..config import DockerSettings, ExecutionConfig, format_size
from ..imagecontract import IMAGE_HOME, IMAGE_USER
from .base import (
    Backend,
    BackendError,
    BackendUnavailable,
    FilesTooLarge,
    ImageMissing,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)
from .dockernet import ISOLATED_NETWORK, forget_network, isolated_network

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
DEFAULT_USER = IMAGE_USER
READ_ONLY_HOME = IMAGE_HOME  # HOME of the base images, for images that set none
#: seconds to open a connection to a network daemon before calling it unreachable
CONNECT_TIMEOUT = 3.0
_CLIENTS: dict[tuple[Any, ...], docker.DockerClient] = {}
_CLIENTS_LOCK = threading.Lock()
#: daemon calls wait on I/O, not CPU: many may be in flight at once
_EXECUTOR = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dss-docker")


def daemon_url(settings: DockerSettings) -> str:
    """The config's host, else ``$DOCKER_HOST`` (as the docker CLI does), else the local socket."""
    return settings.host or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def docker_client(settings: DockerSettings, timeout: int = 60) -> docker.DockerClient:
    """A cached SDK client for the daemon a config names (one per daemon and credentials).

    TLS material comes from the config only; ``DOCKER_TLS_VERIFY`` and ``DOCKER_CERT_PATH``
    in the server's environment are ignored on purpose.
    """
    url = daemon_url(settings)
    key = (url, settings.tls, timeout)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
    if client is not None:
        return client
    tls: docker.tls.TLSConfig | bool = False
    if settings.tls is not None:
        t = settings.tls
        cert = (t.client_cert, t.client_key) if t.client_cert and t.client_key else None
        tls = docker.tls.TLSConfig(
            client_cert=cert, ca_cert=t.ca_cert, verify=t.verify and (t.ca_cert or True)
        )
    try:
        _preflight(url)
        client = _ConfigOnlyClient(base_url=url, tls=tls, timeout=timeout, version="auto")
    except Exception as exc:  # the SDK, requests or paramiko (ssh://): all mean unreachable
        raise BackendUnavailable(
            f"Docker daemon at {url} is unreachable: {_root_cause(exc, bool(tls))}"
        ) from None
    with _CLIENTS_LOCK:
        _CLIENTS[key] = client
    return client


class _ConfigOnlyAPIClient(docker.APIClient):
    """An API client whose TLS verification is the config's, whatever the environment says.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's CA file (and
    even ``verify=False``) on every request, so a daemon's private CA would be ignored.
    """

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify if verify is None else verify
        return settings


class _ConfigOnlyClient(docker.DockerClient):
    def __init__(self, **kwargs: Any):
        self.api = _ConfigOnlyAPIClient(**kwargs)


def _preflight(url: str) -> None:
    """Dial a network daemon first with a short timeout: the SDK's timeout (a minute) is for
    slow answers, and paramiko (``ssh://``) has none, so a silent host would hold a start."""
    parsed = urlparse(url)
    if parsed.scheme not in ("tcp", "http", "https", "ssh") or not parsed.hostname:
        return
    host, port = parsed.hostname, parsed.port
    if parsed.scheme == "ssh":
        ssh = _ssh_config(host)
        if "proxycommand" in ssh:
            return
        host, port = ssh.get("hostname", host), port or 22  # as the SDK dials it
    if port is None:
        return  # the SDK says what is wrong with the URL
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
        pass


def _ssh_config(host: str) -> dict[str, Any]:
    """The ``~/.ssh/config`` entry for a host, as the docker SDK's SSH transport reads it."""
    path = os.path.expanduser("~/.ssh/config")
    try:
        import paramiko
    except ImportError:
        return {}
    if not os.path.exists(path):
        return {}
    return dict(paramiko.SSHConfig.from_path(path).lookup(host))


def forget_client(settings: DockerSettings) -> None:
    """Drop cached clients of a daemon (after it restarted or went away)."""
    url = daemon_url(settings)
    with _CLIENTS_LOCK:
        for key in [k for k in _CLIENTS if k[0] == url]:
            _CLIENTS.pop(key).close()


#: what OpenSSL says when the daemon turns down the client certificate (TLS alerts)
_TLS_ALERTS = ("bad certificate", "unknown ca", "certificate required", "handshake failure")
#: how that refusal shows when the daemon just closes the connection after the handshake
_TLS_CLOSED = ("EOF occurred in violation of protocol", "closed connection without response")


def _root_cause(exc: BaseException, tls: bool = False) -> str:
    """The innermost reason of a requests/urllib3/paramiko error chain, in a few words."""
    text = str(exc)
    verify = re.search(r"certificate verify failed: ([^(]+?)\s*\(_ssl", text)
    if verify or "CERTIFICATE_VERIFY_FAILED" in text:
        why = verify.group(1) if verify else "verify failed"
        return (
            "TLS certificate rejected: the daemon's certificate does not verify against "
            f"the config's tls.ca_cert ({why})"
        )
    if "WRONG_VERSION_NUMBER" in text:
        return "TLS handshake failed: the daemon does not speak TLS on this port"
    if any(f"alert {a}" in text.lower() for a in _TLS_ALERTS) or (
        tls and any(c in text for c in _TLS_CLOSED)
    ):
        return (
            "TLS certificate rejected: the daemon refused the client certificate in the "
            "handshake (check tls.client_cert and tls.client_key: signed by a CA it trusts?)"
        )
    for marker in (
        "Connection refused",
        "No such file or directory",
        "Permission denied",
        "timed out",
        "Name or service not known",
        "Authentication failed",
        "not found in known_hosts",
        "Unable to connect to port",
    ):
        if marker in text:
            if marker == "timed out":
                return "connection timed out"
            if marker == "not found in known_hosts":
                return f"SSH host key unknown: {_last_clause(text)}"
            if marker == "Unable to connect to port":
                return "connection refused (SSH)"
            return marker.lower()
    return _last_clause(text)


def _last_clause(text: str) -> str:
    return text.rsplit(": ", 1)[-1].strip(" ')\"")[:200]


class DockerBackend(Backend):
    """Containers on the Docker (or Docker-API compatible) daemon a config names."""

    def __init__(self, config: ExecutionConfig):
        super().__init__(config)
        self.settings = config.docker
        self.url = daemon_url(self.settings)
        self._image_users: dict[str, str] = {}
        self._last_cpu: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------ helpers

    def client(self) -> docker.DockerClient:
        return docker_client(self.settings)

    async def _api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a low-level API method in a thread (the client, too, is made there)."""

        def call() -> Any:
            return getattr(self.client().api, method)(*args, **kwargs)

        return await self._call(call)

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking SDK call in a thread, turning transport errors into clear ones."""
        try:
            call = functools.partial(func, *args, **kwargs)
            loop = asyncio.get_running_loop()
            try:
                future = loop.run_in_executor(_EXECUTOR, call)
            except RuntimeError:  # interpreter exit: our pool refuses, the loop's may not
                future = loop.run_in_executor(None, call)
            return await future
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise BackendError(f"Docker daemon at {self.url}: {exc.explanation or exc}") from None
        except docker.errors.DockerException as exc:
            raise BackendUnavailable(
                f"Docker daemon at {self.url} is unreachable: {self._why(exc)}"
            ) from None
        except OSError as exc:  # requests' ConnectionError is an OSError
            forget_client(self.settings)
            raise BackendUnavailable(
                f"Docker daemon at {self.url} is unreachable: {self._why(exc)}"
            ) from None

    def _why(self, exc: BaseException) -> str:
        return _root_cause(exc, tls=self.settings.tls is not None)

    @property
    def connect_address(self) -> str:
        """Where the Jupyter server dials published ports."""
        if self.settings.connect_address:
            return self.settings.connect_address
        if self.settings.is_remote:
            return urlparse(self.url).hostname or "127.0.0.1"
        bind = self.settings.bind_address
        return "127.0.0.1" if bind in ("0.0.0.0", "") else bind

    def _container_user(
        self, client: docker.DockerClient, image: str, wanted: str | None = None
    ) -> str:
        """The config's user, else ``wanted`` (the workspace owner's), else the image's
        numeric non-root user, else 1000:100."""
        if self.settings.user:
            return self.settings.user
        if wanted:
            return wanted
        if image not in self._image_users:
            try:
                attrs = client.images.get(image).attrs
            except docker.errors.ImageNotFound:
                raise ImageMissing(
                    f"image {image} is not on the Docker daemon at {self.url}"
                ) from None
            user = (attrs.get("Config") or {}).get("User") or ""
            uid = user.split(":")[0]
            self._image_users[image] = user if uid.isdigit() and uid != "0" else DEFAULT_USER
        return self._image_users[image]

    def _pull_if_registry_has_it(self, client: docker.DockerClient, image: str) -> None:
        """A daemon without the image pulls it from the config's registry (remote daemons)."""
        registry_url = (self.config.registry or "").strip().rstrip("/")
        if not registry_url or not image.startswith(registry_url + "/"):
            return
        try:
            client.api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            pass
        from ..registry import RegistryError, pull_image

        try:
            pull_image(client, image)
        except RegistryError as exc:
            raise ImageMissing(
                f"image {image} is not on the Docker daemon at {self.url} and the pull failed: "
                f"{exc}"
            ) from None

    def _image_home(self, client: docker.DockerClient, image: str) -> str:
        """HOME as the image sets it (the base images' home when it sets none)."""
        try:
            attrs = client.images.get(image).attrs
        except docker.errors.ImageNotFound:
            raise ImageMissing(f"image {image} is not on the Docker daemon at {self.url}") from None
        env = (attrs.get("Config") or {}).get("Env") or []
        homes = [e.split("=", 1)[1] for e in env if e.startswith("HOME=")]
        return homes[-1] if homes and homes[-1].startswith("/") else READ_ONLY_HOME

    def _host_config(
        self,
        spec: WorkloadSpec,
        user: str | None = None,
        home: str | None = None,
        network: str | None = None,
    ) -> dict[str, Any]:
        """Container settings (pure); ``network`` is used when the config names none."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "init": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
        }
        if self.config.read_only_root:
            # /tmp is an anonymous volume, not a tmpfs: private files are copied in before
            # the start and job results read after the exit (a tmpfs exists only while the
            # container runs); it is removed with the container (remove(v=True)).
            kwargs["read_only"] = True
        if home:  # a read-only root: HOME of its own
            uid, _, gid = (user or DEFAULT_USER).partition(":")
            kwargs["tmpfs"] = {home: f"rw,nosuid,nodev,uid={uid},gid={gid or uid},mode=0700"}
        if s.memory:
            kwargs["mem_limit"] = s.memory
            kwargs["memswap_limit"] = s.memory  # no swap: the limit is the limit
        if s.cpus:
            kwargs["nano_cpus"] = int(s.cpus * 1e9)
        if s.pids:
            kwargs["pids_limit"] = s.pids
        if s.shm_size:
            kwargs["shm_size"] = s.shm_size
        if s.runtime:
            kwargs["runtime"] = s.runtime
        if s.gpus is not None:
            kwargs["device_requests"] = [gpu_request(s.gpus)]
        if s.network or network:
            kwargs["network_mode"] = s.network or network
        if spec.ports and s.network != "host":
            kwargs["ports"] = {
                f"{p}/tcp": (s.bind_address, spec.host_ports.get(p)) for p in spec.ports
            }
        if s.mounts:
            kwargs["mounts"] = [
                DockerMount(target=m.target, source=m.source, type=m.type, read_only=m.read_only)
                for m in s.mounts
            ]
        if self.config.read_only_root:
            kwargs.setdefault("mounts", []).append(DockerMount(target="/tmp", source=None))
        plan = spec.workspace
        if plan is not None and plan.mounted and plan.source:
            kwargs.setdefault("mounts", []).append(
                DockerMount(
                    target=plan.root, source=plan.source, type="bind", read_only=plan.read_only
                )
            )
        if spec.host_folder:
            kwargs.setdefault("mounts", []).append(
                DockerMount(
                    target=spec.host_folder_target,
                    source=spec.host_folder,
                    type="bind",
                    read_only=False,
                )
            )
        return kwargs

    # ------------------------------------------------------------------ interface

    def target_key(self) -> tuple[str, ...]:
        return ("docker", self.url, repr(self.settings.tls))

    async def create(self, spec: WorkloadSpec) -> Workload:
        if spec.ports and self.settings.network != "host":
            self._check_binding()
        return await self._call(self._create_sync, spec)

    def _check_binding(self) -> None:
        """A remote daemon's 127.0.0.1 is not ours: refuse before a kernel start times out
        (unless connect_address says how to get there, say through a tunnel)."""
        s = self.settings
        host = urlparse(self.url).hostname or ""
        if (
            s.is_remote
            and not s.connect_address
            and not _is_loopback(host)
            and _is_loopback(s.bind_address)
        ):
            raise BackendError(
                f"the daemon at {self.url} would publish kernel ports on its own "
                f"{s.bind_address}, which this server cannot reach: set docker.bind_address "
                f"to an address of {host} that this server can reach"
            )

    def _create_sync(self, spec: WorkloadSpec) -> Workload:
        try:
            return self._create_once(spec)
        except docker.errors.NotFound as exc:
            if ISOLATED_NETWORK not in str(exc):
                raise
            forget_network(self.url)  # removed by hand meanwhile: make it again
            return self._create_once(spec)
        except docker.errors.APIError as exc:
            if not spec.host_ports or "port is already allocated" not in str(exc):
                raise
        # the previous host ports were taken meanwhile: let the daemon choose new ones
        spec.host_ports = {}
        return self._create_once(spec)

    def _create_once(self, spec: WorkloadSpec) -> Workload:
        client = self.client()
        self._pull_if_registry_has_it(client, spec.image)
        plan = spec.workspace if spec.workspace and spec.workspace.mounted else None
        user = self._container_user(client, spec.image, plan.user if plan else None)
        env = dict(spec.env)
        read_only = self.config.read_only_root
        home = self._image_home(client, spec.image) if read_only else None
        if home and plan and (home + "/").startswith(plan.root.rstrip("/") + "/"):
            home = None  # HOME lies in the mounted workspace: the user's own already
        if plan is not None and user == plan.user and not read_only:
            # a user other than the image's owns nothing at the image's HOME: the
            # container's own /tmp serves (a tmpfs with a uid is not portable: Podman 4)
            env.setdefault("HOME", "/tmp")
        files, in_folder = dict(spec.files), {}
        if spec.host_folder:
            inside = spec.host_folder_target.rstrip("/") + "/"
            in_folder = {
                p[len(inside) :]: files.pop(p)
                for p in list(files)
                if p.startswith(inside) and "/" not in p[len(inside) :]
            }
        if read_only and any(not p.startswith("/tmp/") for p in files):
            raise BackendError(
                f"execution config {self.config.name!r}: with read_only_root, private files "
                f"must be under /tmp/, not {sorted(files)}"
            )
        if spec.host_folder:
            try:
                transport.prepare_folder(spec.host_folder, user, in_folder)
            except OSError as exc:
                raise BackendError(f"execution config {self.config.name!r}: {exc}") from None
        network = None if self.settings.network else isolated_network(client, self.url)
        try:
            container = client.containers.create(
                spec.image,
                command=spec.command,
                name=spec.name,
                labels=spec.labels,
                environment=env,
                user=user,
                working_dir=spec.working_dir or (plan.working_dir if plan else None),
                detach=True,
                **self._host_config(spec, user, home, network),
            )
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"image {spec.image} is not on the Docker daemon at {self.url}"
            ) from None
        try:
            if self.settings.gpus is not None and not container.attrs["HostConfig"].get(
                "DeviceRequests"
            ):
                # Podman 4's Docker API drops device requests: a GPU config would run on CPU
                raise BackendError(
                    f"the daemon at {self.url} ignored the GPU request (gpus: "
                    f"{self.settings.gpus}); Podman's Docker API does not pass GPUs through, "
                    "use a Docker engine with the NVIDIA runtime for this config"
                )
            if files:
                root = "/tmp" if read_only else "/"  # a read-only root takes files in /tmp only
                _put_archive(container, root, _private_tar(files, user, root))
            container.start()
        except BaseException:
            container.remove(force=True)
            raise
        return Workload(id=container.id, name=spec.name, labels=spec.labels, image=spec.image)

    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        if self.settings.network == "host":
            return self.connect_address, {p: p for p in ports}
        attrs = await self._api("inspect_container", workload_id)
        published = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        mapping = {}
        for port in ports:
            bindings = published.get(f"{port}/tcp") or []
            if not bindings:
                state = attrs.get("State", {})
                raise BackendError(
                    f"container {attrs.get('Name', workload_id)} has no published port for {port} "
                    f"(state: {state.get('Status')}, error: {state.get('Error') or 'none'})"
                )
            mapping[port] = int(bindings[0]["HostPort"])
        return self.connect_address, mapping

    async def status(self, workload_id: str) -> WorkloadStatus:
        try:
            attrs = await self._api("inspect_container", workload_id)
        except docker.errors.NotFound:
            return WorkloadStatus("missing", exit_code=-1, reason="the container was removed")
        state = attrs.get("State", {})
        if state.get("Status") in ("created", "running", "restarting", "paused"):
            return WorkloadStatus("running" if state["Status"] == "running" else "pending")
        code = int(state.get("ExitCode", -1))
        if state.get("OOMKilled"):
            limit = (attrs.get("HostConfig") or {}).get("Memory") or 0
            limit_text = f"memory limit {format_size(limit)}" if limit else "no memory limit set"
            return WorkloadStatus("exited", code, f"OOM-killed ({limit_text})", oom_killed=True)
        reason = f"exited with code {code}"
        if state.get("Error"):
            reason += f": {state['Error']}"
        elif code in (137, -9):
            reason += " (killed by SIGKILL)"
        elif code == 143:
            reason += " (stopped by SIGTERM: docker stop, or its daemon shutting down)"
        return WorkloadStatus("exited", code, reason)

    async def signal(self, workload_id: str, signum: int) -> None:
        try:
            await self._api("kill", workload_id, signal=int(signum))
        except docker.errors.NotFound:
            pass
        except BackendError as exc:
            if "is not running" not in str(exc):
                raise

    async def stop(self, workload_id: str, grace_seconds: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await self._api("stop", workload_id, timeout=int(grace_seconds))

    async def remove(self, workload_id: str) -> None:
        self._last_cpu.pop(workload_id, None)
        try:
            await self._api("remove_container", workload_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except BackendError as exc:
            if "is already in progress" not in str(exc):
                raise

    async def logs(self, workload_id: str, tail: int = 50) -> str:
        try:
            raw = await self._api("logs", workload_id, tail=tail)
        except docker.errors.NotFound:
            return ""
        return raw.decode("utf-8", errors="replace")

    async def stats(self, workload_id: str) -> WorkloadStats:
        try:
            raw = await self._api("stats", workload_id, stream=False, one_shot=True)
        except docker.errors.NotFound:
            return WorkloadStats(None, None, None)
        mem = raw.get("memory_stats") or {}
        usage = mem.get("usage")
        if usage is not None:
            stats_ = mem.get("stats") or {}
            usage -= stats_.get("total_inactive_file", stats_.get("inactive_file", 0))
        cpu_total = ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        cpu_percent = None
        now = time.monotonic_ns()
        if cpu_total is not None:
            previous = self._last_cpu.get(workload_id)
            self._last_cpu[workload_id] = (cpu_total, now)
            if previous and now > previous[1]:
                cpu_percent = round(100.0 * (cpu_total - previous[0]) / (now - previous[1]), 1)
        return WorkloadStats(cpu_percent, usage, mem.get("limit"))

    async def list(self, labels: dict[str, str]) -> list[Workload]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        rows = await self._api("containers", all=True, filters=filters)
        return [
            Workload(
                id=r["Id"],
                name=(r.get("Names") or ["/"])[0].lstrip("/"),
                labels=r.get("Labels") or {},
                image=r.get("Image", ""),
                state=r.get("State", "unknown"),
                started_at=str(r.get("Created", "")),
            )
            for r in rows
        ]

    async def follow_logs(self, workload_id: str) -> AsyncIterator[tuple[str, str]]:
        """Two following log streams (stdout, stderr), each read in its own daemon thread
        (not the loop's pool, whose threads the interpreter joins at exit: a job still
        running would hold up the process that should cancel it)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        def pump(name: str) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            try:
                stream = self.client().api.logs(
                    workload_id,
                    stdout=name == "stdout",
                    stderr=name == "stderr",
                    stream=True,
                    follow=True,
                )
                for chunk in stream:
                    if text := decoder.decode(chunk):
                        loop.call_soon_threadsafe(queue.put_nowait, (name, text))
            except (docker.errors.DockerException, OSError, RuntimeError):
                pass  # removed meanwhile (the output ends there), or the loop is closed
            finally:
                with contextlib.suppress(RuntimeError):  # the loop closed (process exit)
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        for name in ("stdout", "stderr"):
            threading.Thread(target=pump, args=(name,), name=f"logs-{name}", daemon=True).start()
        open_streams = 2
        while open_streams:
            item = await queue.get()
            if item is None:
                open_streams -= 1
            else:
                yield item

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        def read() -> dict[str, bytes]:
            try:
                stream, stat = self.client().api.get_archive(workload_id, path)
            except docker.errors.NotFound:
                return {}
            except docker.errors.APIError:
                if self._being_removed(workload_id):  # e.g. cancelled by another process
                    return {}
                raise
            too_big = f"{path} in container {workload_id[:12]} is over {limit} bytes"
            cap = None if limit is None else limit + limit // 8 + 1024 * 1024  # tar headers
            data = bytearray()
            try:
                if limit is not None and (stat or {}).get("size", 0) > limit:
                    raise FilesTooLarge(too_big)
                for chunk in stream:  # never more than the cap in memory
                    data += chunk
                    if cap is not None and len(data) > cap:
                        raise FilesTooLarge(too_big)
            finally:  # lets go of the response (the daemon holds the container until then)
                stream.close()
            with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
                return {
                    m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                    for m in tar.getmembers()
                    if m.isfile()
                }

        return await self._call(read)

    def _being_removed(self, workload_id: str) -> bool:
        try:
            state = self.client().api.inspect_container(workload_id).get("State") or {}
        except docker.errors.NotFound:
            return True
        return state.get("Status") in ("removing", "dead")

    async def check(self) -> dict[str, str]:
        version = await self._api("version")
        components = {c.get("Name"): c.get("Version") for c in version.get("Components", [])}
        engine = "podman" if "Podman Engine" in components else "docker"
        return {
            "daemon": self.url,
            "engine": engine,
            "version": components.get("Podman Engine") or version.get("Version", "?"),
            "api_version": version.get("ApiVersion", "?"),
        }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gpu_request(gpus: str | int | tuple[str, ...]) -> DeviceRequest:
    """``--gpus all``, ``--gpus 2`` or ``--gpus device=0,1`` as a device request."""
    if gpus == "all":
        return DeviceRequest(count=-1, capabilities=[["gpu"]])
    if isinstance(gpus, int):
        return DeviceRequest(count=gpus, capabilities=[["gpu"]])
    return DeviceRequest(device_ids=list(gpus), capabilities=[["gpu"]])


def _put_archive(container: Any, root: str, data: bytes, attempts: int = 3) -> None:
    """Copy the files in; retried when Podman's copy helper loses its pipe (seen under load:
    "passing bulk input to subprocess: write |1: broken pipe"). The copy is idempotent."""
    for attempt in range(attempts):
        try:
            container.put_archive(root, data)
            return
        except docker.errors.APIError as exc:
            if "broken pipe" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _private_tar(files: dict[str, bytes], user: str, root: str = "/") -> bytes:
    """A tar of files (mode 0600) in private folders (0700), owned by the container's user,
    to unpack at ``root`` (the files' absolute paths are made relative to it)."""
    uid, _, gid = user.partition(":")
    uid_n, gid_n = int(uid), int(gid or uid)
    files = {str(PurePosixPath("/", p).relative_to(root)): c for p, c in files.items()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = {str(PurePosixPath(p).parent).lstrip("/") for p in files}
        for folder in sorted(f for f in folders if f not in ("", ".", "tmp")):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o700, uid_n, gid_n
            info.mtime = int(time.time())
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(content), 0o600, uid_n, gid_n
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
