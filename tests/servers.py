"""A real Jupyter server in a subprocess, for tests that kill it, restart it or browse it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

TOKEN = "dss-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, Any]:
    """(status, JSON body) of one call; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw) if raw else None
        except ValueError:
            return exc.code, raw.decode(errors="replace")


async def ws_execute(request: Any, user: str, code: str, strict: bool = False) -> str:
    """Run ``code`` over a kernel's websocket (``request``: a tornado ``HTTPRequest`` or
    URL of ``.../api/kernels/<id>/channels`` with its credentials) as ``user``; return what
    it printed. ``strict``: stdout only, and a traceback fails the test (else stderr and
    tracebacks are part of what it printed)."""
    import asyncio
    import uuid

    from tornado.websocket import websocket_connect

    ws = await websocket_connect(request)
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "username": user}
    header.update(session=uuid.uuid4().hex, date="2026-01-01T00:00:00Z", version="5.3")
    content = {"code": code, "silent": False, "store_history": False}
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
    await ws.write_message(json.dumps({**message, "channel": "shell", "buffers": []}))
    out: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(ws.read_message(), 120)
            assert raw is not None, "the kernel's websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream" and (not strict or msg["content"]["name"] == "stdout"):
                out.append(msg["content"]["text"])
            elif kind == "error":
                traceback = "\n".join(msg["content"]["traceback"])
                if strict:
                    raise AssertionError(traceback)
                out.append(traceback)
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()


class ServerProcess:
    """``python -m <module>`` serving on 127.0.0.1 with a token; its own process group."""

    def __init__(
        self,
        folder: Path,
        env: dict[str, str],
        module: str = "jupyter_server",
        extra_args: tuple[str, ...] = (),
        user: str | None = None,
    ):
        """``user``: run the server as that OS user (``runuser``), as a hub spawner would."""
        self.folder, self.env, self.module, self.extra_args = folder, env, module, extra_args
        self.user = user
        self.root_dir = folder / "notebooks"
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log = folder / "server.log"

    def start(self, timeout: float = 90) -> ServerProcess:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            self.module,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={self.root_dir}",
            *self.extra_args,
        ]
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        elif os.geteuid() == 0:
            argv.append("--allow-root")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.root_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}/"
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll ``/api/status``; fail at once with the log if the server exits."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                self.request("GET", "api/status", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        pytest.fail(f"server did not answer within {timeout} s:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 30
    ) -> tuple[int, Any]:
        """(status, JSON body) of a token-authenticated call; HTTP errors are returned."""
        headers = {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
        return http(method, self.url + path, body, headers, timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hook runs."""
        self.signal(signal.SIGKILL, wait=10)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if self.signal(sig, wait):
                return

    def signal(self, sig: int, wait: float) -> bool:
        if self.proc is None:
            return True
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(wait)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            return False
        return True
