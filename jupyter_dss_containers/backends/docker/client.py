"""The connection to one daemon: a cached SDK client per daemon and credentials, and the
calls made through it, each in a worker thread (every SDK call blocks).

Calls run in a pool of this module's own: the Jupyter server's event loop never waits on
the daemon, and twenty kernels starting at once do not queue behind the loop's small
default pool. Errors come back as the backend's own: the daemon's explanation, or
"unreachable" with the transport's reason in a few words; a 404 stays a
``docker.errors.NotFound`` so that callers can tell "gone" from "failing".
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import docker.tls

from ...config import DockerSettings
from ..base import BackendError, BackendUnavailable, FilesTooLarge
from ..pump import pumped
from .files import regular_files

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
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
    in the server's environment are ignored on purpose. Dials the daemon: call it in a thread.
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
            f"Docker daemon at {url} is unreachable: {root_cause(exc, bool(tls))}"
        ) from None
    with _CLIENTS_LOCK:
        _CLIENTS[key] = client
    return client


def forget_client(settings: DockerSettings) -> None:
    """Drop cached clients of a daemon (after it restarted or went away)."""
    url = daemon_url(settings)
    with _CLIENTS_LOCK:
        for key in [k for k in _CLIENTS if k[0] == url]:
            _CLIENTS.pop(key).close()


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


# --------------------------------------------------------------------------- errors in words

#: what OpenSSL says when the daemon turns down the client certificate (TLS alerts)
_TLS_ALERTS = ("bad certificate", "unknown ca", "certificate required", "handshake failure")
#: how that refusal shows when the daemon just closes the connection after the handshake
_TLS_CLOSED = ("EOF occurred in violation of protocol", "closed connection without response")
#: transport reasons worth naming as they are (lower-cased), or in the words given here
_MARKERS = {
    "Connection refused": None,
    "No such file or directory": None,
    "Permission denied": None,
    "timed out": "connection timed out",
    "Name or service not known": None,
    "Authentication failed": None,
    "not found in known_hosts": "SSH host key unknown: {last}",
    "Unable to connect to port": "connection refused (SSH)",
}


def root_cause(exc: BaseException, tls: bool = False) -> str:
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
    for marker, words in _MARKERS.items():
        if marker in text:
            return words.format(last=_last_clause(text)) if words else marker.lower()
    return _last_clause(text)


def _last_clause(text: str) -> str:
    return text.rsplit(": ", 1)[-1].strip(" ')\"")[:200]


# --------------------------------------------------------------------------- calls


async def call(
    settings: DockerSettings, func: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """Run a blocking SDK call in a thread, turning transport errors into clear ones."""
    url = daemon_url(settings)
    try:
        work = functools.partial(func, *args, **kwargs)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(_EXECUTOR, work)
        except RuntimeError:  # interpreter exit: our pool refuses, the loop's may not
            future = loop.run_in_executor(None, work)
        return await future
    except docker.errors.NotFound:
        raise
    except docker.errors.APIError as exc:
        raise BackendError(f"Docker daemon at {url}: {exc.explanation or exc}") from None
    except docker.errors.DockerException as exc:
        why = root_cause(exc, tls=settings.tls is not None)
        raise BackendUnavailable(f"Docker daemon at {url} is unreachable: {why}") from None
    except OSError as exc:  # requests' ConnectionError is an OSError
        forget_client(settings)
        why = root_cause(exc, tls=settings.tls is not None)
        raise BackendUnavailable(f"Docker daemon at {url} is unreachable: {why}") from None


async def api_call(settings: DockerSettings, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a low-level API method in a thread (the client, too, is made there)."""

    def run() -> Any:
        return getattr(docker_client(settings).api, method)(*args, **kwargs)

    return await call(settings, run)


def follow_logs(settings: DockerSettings, container: str) -> AsyncIterator[tuple[str, str]]:
    """Two following log streams (stdout, stderr), each read in its own daemon thread;
    each ends quietly when the container is removed (its output ends there)."""

    def producer(name: str) -> Callable[[Callable[[tuple[str, str]], None]], None]:
        def follow(emit: Callable[[tuple[str, str]], None]) -> None:
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            try:
                stream = docker_client(settings).api.logs(
                    container,
                    stdout=name == "stdout",
                    stderr=name == "stderr",
                    stream=True,
                    follow=True,
                )
                for chunk in stream:
                    if text := decoder.decode(chunk):
                        emit((name, text))
            except (docker.errors.DockerException, OSError, RuntimeError):
                pass  # removed meanwhile, or the loop is closed (process exit)

        return follow

    return pumped({f"logs-{name}": producer(name) for name in ("stdout", "stderr")})


def put_archive(api: docker.APIClient, container: str, root: str, data: bytes) -> None:
    """Copy files in (blocking); retried when Podman's copy helper loses its pipe (seen under
    load: "passing bulk input to subprocess: write |1: broken pipe"). The copy is idempotent."""
    attempts = 3
    for attempt in range(attempts):
        try:
            api.put_archive(container, root, data)
            return
        except docker.errors.APIError as exc:
            if "broken pipe" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def read_archive(
    api: docker.APIClient, container: str, path: str, limit: int | None = None
) -> dict[str, bytes]:
    """The regular files under ``path`` in a container (blocking); {} when it is gone or
    being removed. Never holds much more than ``limit`` bytes: :class:`FilesTooLarge`."""
    try:
        stream, stat = api.get_archive(container, path)
    except docker.errors.NotFound:
        return {}
    except docker.errors.APIError:
        if being_removed(api, container):  # e.g. cancelled by another process
            return {}
        raise
    too_big = f"{path} in container {container[:12]} is over {limit} bytes"
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
    return regular_files(bytes(data))


def being_removed(api: docker.APIClient, container: str) -> bool:
    try:
        state = api.inspect_container(container).get("State") or {}
    except docker.errors.NotFound:
        return True
    return state.get("Status") in ("removing", "dead")
