"""The connection to one cluster: a cached API client per kubeconfig and context, and the
calls made through it, each in a worker thread (every client call blocks).

Errors come back as the backend's own: the API server's message (the quota a pod would
exceed), or "cluster unreachable" with the transport's reason; a 404 stays an
``ApiException`` so that callers can tell "gone" from "failing".
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import kubernetes.client
import kubernetes.config
from kubernetes.client.rest import ApiException

from ...config import KubernetesSettings
from ..base import BackendError, BackendUnavailable

REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds for each API call other than watches
OUTAGE_LIMIT = 30  # seconds a watch retries a failing API server before the start fails
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
#: watches run in their own pool so that many pods starting at once never starve the
#: default executor
WATCH_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="dss-kube-watch")
_CLIENTS: dict[tuple[Any, ...], kubernetes.client.ApiClient] = {}
_CLIENTS_LOCK = threading.Lock()


def where(settings: KubernetesSettings) -> str:
    """The cluster in words, as every message of this backend starts."""
    if settings.in_cluster:
        return "Kubernetes in-cluster"
    return f"Kubernetes context {settings.context or '(current)'}"


def api_client(settings: KubernetesSettings) -> kubernetes.client.ApiClient:
    """A cached client per (kubeconfig, context): configs naming one cluster share it.

    Reads the kubeconfig: call it in a thread, not on the event loop.
    """
    key = ("in-cluster",) if settings.in_cluster else (settings.kubeconfig, settings.context)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
    if client is not None:
        return client
    try:
        client = kubernetes.client.ApiClient(_configuration(settings))
    except (kubernetes.config.ConfigException, OSError) as exc:
        raise BackendUnavailable(f"{where(settings)}: cannot load kube config: {exc}") from None
    with _CLIENTS_LOCK:
        return _CLIENTS.setdefault(key, client)


def _configuration(settings: KubernetesSettings) -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    if settings.in_cluster:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubeconfig = settings.kubeconfig
        kubernetes.config.load_kube_config(
            config_file=os.path.expanduser(kubeconfig) if kubeconfig else None,
            context=settings.context,
            client_configuration=configuration,
        )
    configuration.retries = 1  # urllib3 retries 3 times by default: 4 timeouts in a row
    return configuration


def route_source_address(api_host: str) -> str:
    """The address this host reaches ``api_host`` from (the source address a pod sees on a
    routed, un-NATed network; in the cluster, this server's pod IP). Resolves a name:
    call it in a thread."""
    url = urlparse(api_host)
    family, _, _, _, address = socket.getaddrinfo(
        url.hostname, url.port or 443, type=socket.SOCK_DGRAM
    )[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(address)  # UDP: no packet sent, only a route chosen
        return probe.getsockname()[0]


def is_dropped_connection(exc: BaseException) -> bool:
    """A transport failure (urllib3's errors, OSError), not an answer of the API server."""
    return isinstance(exc, OSError) or type(exc).__module__.startswith("urllib3")


def api_message(exc: ApiException) -> str:
    """The API server's own message (e.g. the quota it would exceed), not the HTTP dump."""
    try:
        body = json.loads(exc.body or "")
        return body.get("message") or f"{exc.status} {exc.reason}"
    except (ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


async def call(place: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking client call in a thread; a 404 stays an ApiException; every other
    failure becomes a BackendError (BackendUnavailable when the cluster is not reached)
    whose message starts with ``place``."""
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)  # a silent cluster fails fast
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            raise
        raise BackendError(f"{place}: {api_message(exc)}") from None
    except (OSError, kubernetes.client.exceptions.OpenApiException) as exc:
        raise BackendUnavailable(f"{place}: cluster unreachable: {exc}") from None
    except Exception as exc:  # urllib3's MaxRetryError and friends
        if not type(exc).__module__.startswith("urllib3"):
            raise
        reason = getattr(exc, "reason", None) or exc
        text = str(reason.args[-1] if getattr(reason, "args", None) else reason)
        raise BackendUnavailable(f"{place}: cluster unreachable: {text}") from None


class Backoff:
    """Exponential waits with jitter between retries of a failing API server (in a thread)."""

    def __init__(self, first: float = 0.1, cap: float = 2.0, limit: float = OUTAGE_LIMIT):
        self.first, self.cap, self.limit = first, cap, limit
        self.reset()

    def reset(self) -> None:
        self.delay, self.failing_since = self.first, None

    def wait(self, error: str) -> None:
        """Sleep before the next try; raise with ``error`` once the outage is too long."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > self.limit:
            raise BackendError(f"{error} (still failing after {self.limit:.0f} s)")
        time.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.cap, self.delay * 2)
