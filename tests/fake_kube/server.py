"""A fake cluster: the API server (:mod:`.api`) on 127.0.0.1 in its own thread and event
loop, over a store (:mod:`.store`) with admission (:mod:`.admission`), a one-node kubelet
on the local Docker engine (:mod:`.kubelet`) and the faults a test arms (:mod:`.faults`).

Tests use :class:`FakeCluster` and :func:`write_kubeconfig` from here.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from typing import Any

import docker
from aiohttp import web

from .api import Api
from .authn import DEFAULT_TOKEN
from .faults import VERBS, Faults
from .kubelet import FAKE_LABEL, Kubelet
from .podidentity import PodIdentity
from .store import API_VERSIONS, KINDS, Store
from .tls import ClusterCA

__all__ = ["API_VERSIONS", "FAKE_LABEL", "KINDS", "VERBS", "FakeCluster", "write_kubeconfig"]


class FakeCluster:
    """One fake cluster: an API server on 127.0.0.1 and a one-node kubelet on Docker."""

    def __init__(
        self,
        name: str,
        docker_client: docker.DockerClient,
        ip_base: int,
        tls: bool = False,
        nodes: int = 1,
    ):
        """``tls``: serve HTTPS with a CA of its own (:mod:`.tls`), and give each pod a
        service-account token whose requests RBAC decides (:mod:`.podidentity`, :mod:`.rbac`).
        ``nodes``: how many nodes it starts with."""
        self.name = name
        self.instance = f"{name}-{os.getpid()}"  # another test process's fake is not ours
        self.docker = docker_client
        self.node_labels = {"kubernetes.io/hostname": f"{name}-node", "kubernetes.io/os": "linux"}
        self.denied: set[tuple[str, str]] = set()  # (verb, resource) SSARs answer "no" to
        self.reported: dict[str, float] = {}  # pod name -> loop time of its failure report
        self.faults = Faults()
        self.store = Store()
        self.kubelet = Kubelet(
            self.store, docker_client, self.instance, ip_base, self.node_labels, self.reported
        )
        #: the fake cluster-autoscaler, off until a test turns it on (:mod:`.autoscaler`)
        self.autoscaler = self.kubelet.autoscaler
        self.tokens = {DEFAULT_TOKEN}  # bearer tokens the API server accepts (else 401)
        self.api = Api(
            self.store, self.faults, self.kubelet, self.denied, self.reported, self.tokens
        )
        self.rbac = self.api.rbac
        self.ca = ClusterCA() if tls else None
        if self.ca:
            self.kubelet._dirs.append(self.ca.folder)
        #: the Node objects (their taints, the images they hold); ``nodes=2`` adds
        #: ``<name>-node-2`` (with the first node's labels but its own hostname)
        self.nodes = self.api.nodes
        for i in range(2, nodes + 1):
            self.nodes.add(f"{name}-node-{i}", dict(self.node_labels))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.store.add_namespace("default")

    @property
    def objects(self) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
        return self.store.objects

    @property
    def namespaces(self) -> dict[str, dict[str, Any]]:
        return self.store.namespaces

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return self.store.pods(namespace)

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

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
        self.store.changed = asyncio.Condition()
        self._runner = web.AppRunner(self.api.app())
        await self._runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        context = self.ca.server_context() if self.ca else None
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()
        if self.ca:
            self.kubelet.identity = PodIdentity(
                self.rbac, self.ca.ca_pem, "127.0.0.1", self.port, self.kubelet._dirs
            )

    def stop(self) -> None:
        """Remove every container the kubelet made, then stop serving."""
        self.kubelet.remove_all()
        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)

    def add_node(
        self, name: str, labels: dict[str, str] | None = None, taints: list | None = None
    ) -> None:
        """One more node (running pods on the same engine), from a test (thread-safe)."""
        if self.loop is None:
            self.nodes.add(name, labels, taints)
            return

        async def add() -> None:
            self.nodes.add(name, labels, taints)

        self.call(add)

    def call(self, func: Any, *args: Any) -> Any:
        """Run a coroutine function on the cluster's loop from a test (thread-safe)."""
        return asyncio.run_coroutine_threadsafe(func(*args), self.loop).result(30)


def write_kubeconfig(path: str, clusters: dict[str, FakeCluster], current: str) -> None:
    """A kubeconfig with one context per fake cluster (a bearer token; an HTTPS one's CA)."""
    import base64

    import yaml

    def cluster(c: FakeCluster) -> dict[str, str]:
        if c.ca is None:
            return {"server": c.url}
        return {
            "server": c.url,
            "certificate-authority-data": base64.b64encode(c.ca.ca_pem).decode(),
        }

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": n, "cluster": cluster(c)} for n, c in clusters.items()],
        "users": [{"name": "tester", "user": {"token": DEFAULT_TOKEN}}],
        "contexts": [{"name": n, "context": {"cluster": n, "user": "tester"}} for n in clusters],
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
