"""A TCP connection to a port inside a pod, through the API server's pods/portforward.

The official client's :func:`kubernetes.stream.portforward` opens the portforward
websocket and pumps it from a thread of its own into one end of a socket pair; the caller
gets a duplicate of the other end, a plain socket an event loop can use. Nothing is
exposed on a node or Service: the API server's authorization (``create`` on
``pods/portforward``) is the only way in.

Tested against the fake API server of the tests (``tests/test_proxy_kube.py``), not
against a real one.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException
from kubernetes.stream import portforward

from ..base import BackendError
from . import client as kube


class PodForward:
    """One forwarded connection: :attr:`local` is the caller's socket; the API server's
    error channel for the port (why it could not connect) is in :attr:`errors`."""

    def __init__(self, forward: Any, port: int):
        self._forward, self._port = forward, port
        self.local = socket.socket(fileno=os.dup(forward.socket(port).fileno()))
        forward.socket(port).close()  # ours is the duplicate: one owner of the pair's end

    @property
    def errors(self) -> str:
        return str(self._forward.error(self._port) or "")


def _open_sync(api: kubernetes.client.ApiClient, workload_id: str, port: int) -> PodForward:
    namespace, _, name = workload_id.partition("/")
    core = kubernetes.client.CoreV1Api(api)
    forward = portforward(
        core.connect_get_namespaced_pod_portforward, name, namespace, ports=str(port)
    )
    return PodForward(forward, port)


async def open_port(backend: Any, workload_id: str, port: int) -> PodForward:
    """A connection to ``port`` in the pod ``<namespace>/<name>`` (calls in a thread)."""
    api = await backend._api()
    try:
        return await asyncio.to_thread(_open_sync, api, workload_id, port)
    except ApiException as exc:
        raise BackendError(f"{kube.where(backend.settings)}: {kube.api_message(exc)}") from None
    except OSError as exc:
        raise BackendError(f"{kube.where(backend.settings)}: portforward failed: {exc}") from None
