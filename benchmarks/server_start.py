"""Kernel start through a real Jupyter server, as a browser starts one: REST, then websocket.

    python benchmarks/server_start.py [--runs 5] [--warmup 1] [--json out.json] [--no-gateway]

One ``jupyter server`` subprocess with the extension serves every variant: the local
``python3`` ipykernel (the baseline), a container kernel on ipc sockets (the default on a local
daemon), the same on TCP with CurveZMQ, a pooled one, and gateway_provisioners'
``DockerProvisioner`` on an image built FROM our base image (``gateway.py``) when it imports.
For each start: ``POST /api/kernels``, then a websocket on ``/api/kernels/<id>/channels`` and
a ``kernel_info_request`` on it; the time is from the POST to that reply. Shutdown is not
timed. Variants run interleaved; a pooled start waits (untimed) until the server's log says
its pool refilled, since a server keeps its pools full between users' starts.
It prints tables; it asserts nothing about durations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or imported by a sibling
import gateway
from jupyterserver import server_argv
from kernel_start import (
    CONTAINER_CONFIG,
    GATEWAY,
    POOLED_CONFIG,
    TCP_CONFIG,
    gateway_setup,
    machine_info,
    remove_leftover_containers,
    summarize,
)

BASELINE = "local ipykernel"
TOKEN = secrets.token_hex(16)
POOL_READY = f"ready for {POOLED_CONFIG!r}"  # the pool's log line when a kernel is ready


@dataclass(frozen=True)
class Variant:
    name: str
    kernel_name: str
    pooled: bool = False


def variants(with_gateway: bool) -> list[Variant]:
    out = [
        Variant(BASELINE, "python3"),
        Variant("container, ipc", f"dss-{CONTAINER_CONFIG}"),
        Variant("container, tcp + Curve", f"dss-{TCP_CONFIG}"),
        Variant("pooled", f"dss-{POOLED_CONFIG}", pooled=True),
    ]
    return out + ([Variant(GATEWAY, gateway.GATEWAY_KERNEL)] if with_gateway else [])


def write_config(folder: Path) -> Path:
    path = folder / "dss_containers.yaml"
    everyone = "permissions: {groups: ['*']}"
    path.write_text(
        "execution_configs:\n"
        f"  {CONTAINER_CONFIG}: {{backend: docker, image: default, {everyone}}}\n"
        f"  {TCP_CONFIG}: {{backend: docker, image: default, transport: tcp, {everyone}}}\n"
        f"  {POOLED_CONFIG}: {{backend: docker, image: default, warm_pool: {{size: 1}}, "
        f"workspace: {{mount: none}}, {everyone}}}\n"
    )
    return path


class Server:
    """``jupyter server`` with the extension, on 127.0.0.1, in its own process group."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.log = folder / "server.log"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        root = self.folder / "notebooks"
        root.mkdir(exist_ok=True)
        argv = server_argv(
            self.port,
            TOKEN,
            root,
            "--ServerApp.kernel_spec_manager_class="
            "jupyter_dss_containers.kernelspecs.ContainerKernelSpecManager",
        )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def pool_fills(self) -> int:
        return self.log.read_text(errors="replace").count(POOL_READY)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


class Client:
    """REST and websocket calls with the server's token."""

    def __init__(self, server: Server):
        self.server = server
        self.http = AsyncHTTPClient()
        self.headers = {"Authorization": f"token {TOKEN}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        request = HTTPRequest(
            self.server.url + path,
            method=method,
            headers=self.headers,
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            request_timeout=180,
        )
        response = await self.http.fetch(request, raise_error=True)
        return json.loads(response.body) if response.body else None

    async def wait_up(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await self.call("GET", "api/status")
                return
            except OSError:
                await asyncio.sleep(0.3)
        raise SystemExit(f"the server did not answer; see {self.server.log}")

    async def kernel_info(self, kernel_id: str) -> None:
        """Open the kernel's channels websocket and wait for its ``kernel_info_reply``."""
        url = self.server.url.replace("http", "ws") + f"api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(HTTPRequest(url, headers=self.headers))
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "kernel_info_request",
            "username": "bench",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
        await ws.write_message(json.dumps({**message, "channel": "shell", "buffers": []}))
        try:
            while True:
                raw = await asyncio.wait_for(ws.read_message(), 120)
                if raw is None:
                    raise RuntimeError(f"kernel {kernel_id}: websocket closed before the reply")
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") == msg_id and (
                    reply["header"]["msg_type"] == "kernel_info_reply"
                ):
                    return
        finally:
            ws.close()


async def one_start(client: Client, variant: Variant) -> tuple[float, float]:
    """(created, ready) seconds from the POST for one kernel; deleted afterwards, untimed."""
    started = time.perf_counter()
    model = await client.call("POST", "api/kernels", {"name": variant.kernel_name})
    created = time.perf_counter()
    try:
        await client.kernel_info(model["id"])
        return created - started, time.perf_counter() - started
    finally:
        await client.call("DELETE", f"api/kernels/{model['id']}")


async def wait_for_pool(server: Server, takes: int, timeout: float = 60) -> None:
    """Poll the server's log (a file of another process: there is nothing to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.pool_fills() > takes:
            return
        await asyncio.sleep(0.2)


async def measure(
    server: Server, chosen: list[Variant], runs: int, warmup: int, console: Console
) -> dict[str, dict[str, list[float]]]:
    client = Client(server)
    await client.wait_up()
    samples = {v.name: {"created": [], "ready": []} for v in chosen}
    takes = 0
    for round_ in range(warmup + runs):
        label = "warmup" if round_ < warmup else f"run {round_ - warmup + 1}/{runs}"
        for variant in chosen:
            if variant.pooled:
                await wait_for_pool(server, takes)
                takes += 1
            created, ready = await one_start(client, variant)
            console.print(
                f"{label:>9}  {variant.name:<26} created {created:6.3f} s  ready {ready:6.3f} s",
                highlight=False,
            )
            if round_ >= warmup:
                samples[variant.name]["created"].append(created)
                samples[variant.name]["ready"].append(ready)
    return samples


def table(samples: dict[str, dict[str, list[float]]]) -> Table:
    out = Table(title="Kernel start through a Jupyter server: POST to kernel_info_reply (s)")
    columns = ["variant", "n", "created", "ready median", "p95", "min", "max", "x local"]
    if GATEWAY in samples:
        columns.append("x gateway")
    for column in columns:
        out.add_column(column, justify="left" if column == "variant" else "right")
    medians = {name: summarize(s["ready"])["median"] for name, s in samples.items()}
    for name, s in samples.items():
        ready = summarize(s["ready"])
        row = [
            name,
            str(ready["n"]),
            f"{summarize(s['created'])['median']:.3f}",
            *(f"{ready[k]:.3f}" for k in ("median", "p95", "min", "max")),
            f"{ready['median'] / medians[BASELINE]:.2f}",
        ]
        if GATEWAY in samples:
            row.append(f"{ready['median'] / medians[GATEWAY]:.2f}")
        out.add_row(*row)
    return out


def server_env(config: Path, jupyter_path: Path | None) -> dict[str, str]:
    """A small environment, the same for every variant (the gateway launcher copies it)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DSS_CONTAINERS_CONFIG": str(config),
        "KERNEL_USERNAME": gateway.KERNEL_USER,
    }
    for name in ("DOCKER_HOST", "PYTHONPATH", "GP_RESPONSE_IP"):
        if name in os.environ:
            env[name] = os.environ[name]
    if jupyter_path is not None:
        env["JUPYTER_PATH"] = str(jupyter_path)
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write the raw samples")
    parser.add_argument("--gateway", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    machine = machine_info()
    console.print(" | ".join(f"{k}: {v}" for k, v in machine.items()))
    folder = Path(tempfile.mkdtemp(prefix="dss-bench-server-"))
    setup = gateway_setup(args.gateway, folder, console)  # sets GP_RESPONSE_IP when used
    jupyter_path = setup.kernels_dir.parent if setup else None
    server = Server(folder, server_env(write_config(folder), jupyter_path))
    server.start()
    try:
        chosen = variants(setup is not None)
        samples = asyncio.run(measure(server, chosen, args.runs, args.warmup, console))
        console.print(table(samples))
        load = os.getloadavg()
        console.print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        server.stop()
        removed = remove_leftover_containers()
        if setup:
            removed += gateway.remove_containers(gateway_kernel_ids(server))
        if removed:
            console.print(f"[yellow]removed leftover containers: {', '.join(removed)}")
    if args.json:
        report = {"machine": machine, "samples": samples, "load": os.getloadavg()}
        Path(args.json).write_text(json.dumps(report, indent=2))


def gateway_kernel_ids(server: Server) -> set[str]:
    """Kernel ids the server logged (gateway containers are labelled by kernel id)."""
    text = server.log.read_text(errors="replace")
    return {word for word in text.split() if len(word) == 36 and word.count("-") == 4}


if __name__ == "__main__":
    main()
