"""A real trusted launcher in a subprocess, and plain HTTP calls to it, for the tests
(``http`` lives in :mod:`servers` and is re-exported here)."""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from servers import free_port, http

__all__ = [
    "LauncherProcess",
    "create_each",
    "create_workload",
    "delete_workload",
    "http",
    "queued_start",
]


class LauncherProcess:
    """``jupyter dss-containers launcher`` in shared-secret mode on 127.0.0.1."""

    def __init__(self, folder: Path, config: Path, extra_args: tuple[str, ...] = ()):
        self.folder, self.config, self.extra_args = folder, config, extra_args
        self.secret = secrets.token_hex(24)
        self.launcher_id = f"test-launcher-{secrets.token_hex(4)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = folder / "launcher.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> LauncherProcess:
        secret_file = self.folder / "launcher.secret"
        secret_file.write_text(self.secret)
        secret_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        argv = [
            sys.executable,
            "-c",
            "from jupyter_dss_containers.cli import main; main()",  # the CLI subcommand
            "launcher",
            f"--config={self.config}",
            f"--secret-file={secret_file}",
            f"--port={self.port}",
            f"--id={self.launcher_id}",
            *self.extra_args,
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the launcher exited:\n{self.log.read_text()[-3000:]}")
            try:
                if http("GET", self.url + "api/health")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the launcher did not answer:\n{self.log.read_text()[-3000:]}")

    def call(self, method: str, path: str, body: Any = None, user: str | None = None, **kw):
        headers = {"Authorization": f"Bearer {kw.get('secret', self.secret)}"}
        if user:
            headers["X-DSS-Containers-User"] = user
        return http(method, self.url + "api/" + path, body, headers)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def create_workload(
    launcher: LauncherProcess, user: str, config: str, name: str | None = None
) -> tuple[int, Any]:
    """POST a ``sleep 600`` kernel on the config's image for ``user`` (status, answer)."""
    from jupyter_dss_containers import images, ownership
    from jupyter_dss_containers.config import parse_config, read_document

    config_file = parse_config(*read_document(launcher.config))
    body = {
        "name": name or f"dss-kernel-{secrets.token_hex(4)}",
        "image": images.resolve_image(config_file, config_file.get(config)),
        "command": ["sleep", "600"],
        "labels": {ownership.KIND: "kernel"},
    }
    return launcher.call("POST", f"configs/{config}/workloads", body, user=user)


def create_each(launcher: LauncherProcess, user: str, configs: tuple[str, ...], made: list) -> None:
    """One workload of ``user`` on each of ``configs``, appended to ``made`` as (config,
    answer) as it is made (so a ``finally`` can delete them); a refusal fails the test."""
    for config in configs:
        status, body = create_workload(launcher, user, config)
        assert status == 201, body
        made.append((config, body))


def delete_workload(launcher: LauncherProcess, config: str, workload: dict, user: str) -> int:
    """DELETE one workload through the launcher as ``user``; the status (a pod's id,
    ``namespace/name``, is quoted)."""
    wid = quote(workload["id"], safe="")
    return launcher.call("DELETE", f"configs/{config}/workloads/{wid}", user=user)[0]


def queued_start(
    launcher: LauncherProcess, user: str, config: str
) -> tuple[concurrent.futures.Future, str]:
    """Start a workload in a thread; return once the launcher says it waits in the queue
    (fail if it is answered first: it did not wait)."""
    name = f"dss-kernel-{secrets.token_hex(4)}"
    pool = concurrent.futures.ThreadPoolExecutor(1)
    started = pool.submit(create_workload, launcher, user, config, name)
    pool.shutdown(wait=False)
    for _ in range(600):
        if started.done():
            pytest.fail(f"the start did not wait in the queue: {started.result()}")
        if launcher.call("GET", "usage", user=user)[1]["queued"] == 1:
            return started, name
        time.sleep(0.1)
    pytest.fail("the start never showed in the queue")
