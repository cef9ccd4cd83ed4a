"""``pods/<name>/portforward``: the API server's websocket into a pod's ports.

The protocol is the real one the official client speaks (``v4.channel.k8s.io``): per
requested port two channels, data ``2i`` and error ``2i+1``, each opened by the server
with a frame holding the port (2 bytes, little endian); then binary frames ``channel +
payload`` both ways. A connection that cannot be made is reported on the error channel in
the kubelet's words. As a real kubelet enters the pod's network namespace (CRI's
PortForward), this one reaches the pod's loopback by execing a forwarder in the pod's
container (the product's Docker forwarder: ``jupyter_dss_containers.backends.docker.
forward``), so nothing of the pod is published for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import docker.errors
from aiohttp import WSMsgType, web

from jupyter_dss_containers.backends.docker.forward import Forward, _ExecStream, forwarder_command

from .kubelet import Kubelet
from .podoutput import status
from .store import Store

PROTOCOL = "v4.channel.k8s.io"


def _connect(kubelet: Kubelet, ns: str, name: str, port: int) -> Forward:
    container = kubelet.container(ns, name)
    api = container.client.api
    exec_id = api.exec_create(
        container.id, forwarder_command(port), stdin=True, stdout=True, stderr=True, tty=False
    )["Id"]
    return Forward(_ExecStream(api.exec_start(exec_id, tty=False, socket=True)))


class PortForwarder:
    """The route's handler over one cluster's store and kubelet."""

    def __init__(self, store: Store, kubelet: Kubelet):
        self.store, self.kubelet = store, kubelet

    async def pod_portforward(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.store.objects["pods"].get((ns, name))
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        try:
            ports = [int(p) for p in request.query.get("ports", "").split(",") if p]
        except ValueError:
            ports = []
        if not ports or any(not 0 < p < 65536 for p in ports):
            return status(400, "BadRequest", "invalid port in the ports parameter")
        if (pod.get("status") or {}).get("phase") != "Running":
            return status(400, "BadRequest", f"pod {name} is not running")
        ws = web.WebSocketResponse(protocols=(PROTOCOL,))
        await ws.prepare(request)
        writers: dict[int, asyncio.StreamWriter] = {}
        tasks = []
        for index, port in enumerate(ports):
            for channel in (2 * index, 2 * index + 1):
                await ws.send_bytes(bytes([channel]) + port.to_bytes(2, "little"))
            try:
                forward = await asyncio.to_thread(_connect, self.kubelet, ns, name, port)
            except (docker.errors.DockerException, OSError) as exc:
                await ws.send_bytes(bytes([2 * index + 1]) + str(exc).encode())
                continue
            reader, writer = await asyncio.open_connection(sock=forward.local)
            writers[2 * index] = writer
            tasks.append(asyncio.ensure_future(_down(ws, reader, forward, index, port, name)))
        try:
            async for message in ws:
                if message.type != WSMsgType.BINARY or not message.data:
                    continue
                writer = writers.get(message.data[0])
                if writer is not None:
                    writer.write(message.data[1:])
                    await writer.drain()
        finally:
            for writer in writers.values():
                writer.close()
            for task in tasks:
                task.cancel()
        return ws


async def _down(
    ws: web.WebSocketResponse,
    reader: asyncio.StreamReader,
    forward: Any,
    index: int,
    port: int,
    name: str,
) -> None:
    """The pod's bytes to the data channel; at their end, why (if it never connected) on
    the error channel, then the websocket closes, as a kubelet ends a forwarded stream."""
    sent = False
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            sent = True
            await ws.send_bytes(bytes([2 * index]) + data)
        if not sent and forward.errors:
            message = (
                f"error forwarding port {port} to pod {name}: "
                f"dial tcp4 127.0.0.1:{port}: {forward.errors}"
            )
            await ws.send_bytes(bytes([2 * index + 1]) + message.encode())
    except (ConnectionError, RuntimeError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
