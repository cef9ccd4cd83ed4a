"""The proxy route's Kubernetes path: a connection to a port inside a kernel's pod through
the API server's pods/portforward (the official client's ``portforward``).

Against the fake cluster of ``tests/fake_kube`` (whose portforward speaks the real
``v4.channel.k8s.io`` protocol and reaches the pod's loopback as a kubelet does), or a real
one with ``DSS_TEST_KUBECONFIG``. The route itself is backend-agnostic and is shown end to
end on Docker in ``tests/test_proxy.py``; here the backend's connection is shown: the page
of an app on the pod's loopback, and the refusal of a port where nothing listens.
"""

from __future__ import annotations

import asyncio

import pytest
from kernels import run, start, stop
from test_kubernetes import REAL, Clusters, kube_config  # noqa: F401

from jupyter_dss_containers.backends.forward import open_port

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def clusters(docker_client, workspace):
    """test_kubernetes's clusters, on pod addresses of their own (127.0.11.x, 127.0.12.x):
    a test_kubernetes run at the same time on this engine publishes on its own ones."""
    if REAL:
        import kubernetes.config

        _, current = kubernetes.config.list_kube_config_contexts(REAL)
        yield Clusters(REAL, current["name"], None, None)
        return
    from fake_kube.server import FakeCluster, write_kubeconfig

    fakes = {"fake-pa": FakeCluster("fake-pa", docker_client, 11)}
    fakes["fake-pb"] = FakeCluster("fake-pb", docker_client, 12)
    for fake in fakes.values():
        fake.start()
    path = str(workspace / "kubeconfig-proxy")
    write_kubeconfig(path, fakes, "fake-pa")
    yield Clusters(path, "fake-pa", "fake-pb", fakes)
    for fake in fakes.values():
        fake.stop()


SERVE = (
    "import subprocess, sys, socket, time\n"
    "subprocess.Popen([sys.executable, '-m', 'http.server', '8123', '--bind', '127.0.0.1'],"
    " cwd='/tmp', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "for _ in range(200):\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', 8123), timeout=1).close(); break\n"
    "    except OSError:\n"
    "        time.sleep(0.1)\n"
    "print('listening')\n"
)


async def _get(connection, path: str = "/") -> bytes:
    reader, writer = await asyncio.open_connection(sock=connection.local)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()


async def test_a_port_on_the_pods_loopback_is_reached_through_portforward(
    kube_config,  # noqa: F811
    clusters,
):
    """Guards the Kubernetes code path of the proxy: the client's portforward websocket,
    its socket handed to the event loop, bytes both ways; and the reason a closed port
    gives (the API server's error channel)."""
    km, kc = await start("dss-k8s-small")
    try:
        _, printed = await run(kc, SERVE)
        assert printed.strip() == "listening"
        backend, workload_id = km.provisioner.backend, km.provisioner.workload_id
        answer = await _get(await open_port(backend, workload_id, 8123))
        assert answer.startswith(b"HTTP/1.0 200"), answer[:200]
        assert b"Directory listing" in answer
        closed = await open_port(backend, workload_id, 8199)
        assert await _get(closed) == b""
        assert "Connection refused" in closed.errors
    finally:
        await stop(km, kc)
