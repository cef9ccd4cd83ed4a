"""A real JupyterHub in a subprocess (configured by examples/jupyterhub_config.py), and the
calls tests make through its proxy, to its API and to the launcher service."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from launchers import http
from servers import free_port, ws_execute

EXAMPLE = Path(__file__).parent.parent / "examples" / "jupyterhub_config.py"
TEST_OVERLAY = """
c = get_config()  # noqa: F821
load_subconfig({example!r})  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.db_url = "sqlite:///{folder}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/cookie_secret"
c.JupyterHub.pid_file = "{folder}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{"alice", "bob"}}
c.JupyterHub.load_groups = {{
    "analysts": {{"users": ["alice", "bob"]}},
    "gpu-users": {{"users": ["bob"]}},
}}
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180
c.Spawner.environment.update({{"PYTHONPATH": {pythonpath!r}}})
c.JupyterHub.services[0].setdefault("environment", {{}}).update({{"PYTHONPATH": {pythonpath!r}}})
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {admin_token!r}}})
c.JupyterHub.load_roles.append({{
    "name": "test-admin",
    "scopes": ["admin:users", "admin:servers", "tokens", "read:users", "admin:groups"],
    "services": ["test-admin"],
}})
"""


class Hub:
    """A JupyterHub process and the calls the tests make through its proxy."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.launcher_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.launcher_name = f"dss-launcher-{secrets.token_hex(3)}"
        self.launcher = f"http://127.0.0.1:{self.launcher_port}/services/{self.launcher_name}/api/"
        self.admin_token = secrets.token_hex(32)
        self.log = folder / "hub.log"
        self.proc: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}
        #: kernels the tests started, by a name of their own
        self.kernels: dict[str, str] = {}

    def start(self, config_file: Path) -> Hub:
        overlay = self.folder / "jupyterhub_config.py"
        overlay.write_text(
            TEST_OVERLAY.format(
                example=str(EXAMPLE),
                port=self.port,
                hub_port=self.hub_port,
                proxy_port=self.proxy_port,
                folder=self.folder,
                pythonpath=os.environ.get("PYTHONPATH", ""),
                admin_token=self.admin_token,
            )
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "DSS_"))},
            "DSS_HUB_PYTHON": sys.executable,
            "DSS_LAUNCHER_PORT": str(self.launcher_port),
            "DSS_LAUNCHER_NAME": self.launcher_name,
            "DSS_CONTAINERS_CONFIG_FILE": str(config_file),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(overlay)],
                cwd=self.folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait(lambda: self.admin("GET", "")[0] == 200, "the hub's API", 120)
        self.wait(
            lambda: http("GET", self.launcher + "health")[0] == 200, "the launcher service", 120
        )
        return self

    def wait(self, ready: Any, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the hub exited:\n{self.tail()}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"waited {timeout} s for {what}:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"token {self.admin_token}"}
        return http(method, f"{self.url}hub/api/{path}", body, headers)

    def token(self, user: str, **body: Any) -> str:
        status, answer = self.admin("POST", f"users/{user}/tokens", {"note": "test", **body})
        assert status in (200, 201), answer
        return answer["token"]

    def start_server(self, user: str) -> None:
        status, answer = self.admin("POST", f"users/{user}/server")
        assert status in (201, 202, 400), answer  # 400: already running
        self.wait(lambda: self.server_ready(user), f"{user}'s server", 240)
        self.tokens[user] = self.token(user, expires_in=3600)

    def server_ready(self, user: str) -> bool:
        status, model = self.admin("GET", f"users/{user}")
        return status == 200 and bool((model.get("servers") or {}).get("", {}).get("ready"))

    def as_user(self, user: str, method: str, path: str, body: Any = None, token=None):
        """A call through the hub's proxy with the user's own token."""
        headers = {"Authorization": f"token {token or self.tokens[user]}"}
        return http(method, self.url + path, body, headers)

    def direct(self, token: str | None, method: str, path: str, body: Any = None):
        """A call straight to the launcher's API."""
        headers = {"Authorization": f"token {token}"} if token is not None else {}
        return http(method, self.launcher + path, body, headers)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)


async def execute(hub: Hub, user: str, kernel_id: str, code: str) -> str:
    """Run code on the kernel's websocket through the proxy; return what it printed."""
    from tornado.httpclient import HTTPRequest

    url = f"ws://127.0.0.1:{hub.port}/user/{user}/api/kernels/{kernel_id}/channels"
    headers = {"Authorization": f"token {hub.tokens[user]}"}
    return await ws_execute(HTTPRequest(url, headers=headers), user, code)
