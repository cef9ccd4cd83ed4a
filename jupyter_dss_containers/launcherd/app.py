"""``jupyter dss-containers launcher``: run the trusted launcher (a hub service or alone).

Under JupyterHub (``$JUPYTERHUB_API_TOKEN`` and ``$JUPYTERHUB_API_URL`` set, as the hub
sets them for a managed service) callers are authenticated by the hub and workloads are
bound to their user's servers. Without a hub, ``--secret-file`` names the secret of the
one trusted server that may call it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tornado.httpserver import HTTPServer
from tornado.web import Application as WebApplication
from traitlets import Bool, Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Application

from .._version import __version__
from ..config import find_config_path
from . import wire
from .auth import Authenticator, HubAuthenticator, SecretAuthenticator
from .handlers import handlers
from .hub import HubClient
from .lifecycle import reap_forever
from .scope import HOME, root_template_problem
from .service import Launcher, log


class LauncherApp(Application):
    """The trusted launcher: the only process that holds engine credentials."""

    name = "jupyter-dss-containers-launcher"
    description = (
        "Run the trusted launcher: it alone holds the Docker socket, TLS keys and "
        "kubeconfigs, and starts kernels and jobs for authenticated users."
    )
    version = __version__

    dss_config = Unicode(
        None, allow_none=True, config=True, help="The config file (default: the usual search)."
    )
    ip = Unicode(config=True, help="Address to listen on (default: from the hub's service URL).")
    port = Integer(config=True, help="Port to listen on (default: from the hub's service URL).")
    base_url = Unicode(
        config=True,
        help="Path prefix of the API (default: $JUPYTERHUB_SERVICE_PREFIX, else /), so the "
        "hub's proxy can route /services/<name>/ to it.",
    )
    launcher_id = Unicode(
        config=True,
        help="This launcher's name, written on every workload it starts: it reaps and serves "
        "only those (default: $JUPYTERHUB_SERVICE_NAME, else dss-launcher).",
    )
    secret_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Without a hub: a file holding the shared secret of the one trusted server that "
        "may call the launcher (it names the user it acts for).",
    )
    token_cache_seconds = Integer(
        10, config=True, help="Seconds a hub answer about a token is reused (revocation delay)."
    )
    poll_interval = Float(
        2.0,
        config=True,
        help="Seconds between two looks at the hub: how fast a stopped server's kernels and "
        "jobs are removed.",
    )
    map_os_users = Bool(
        True,
        config=True,
        help="Run a user's containers as their OS uid:gid when an OS user of that name exists "
        "here (with uid >= min_uid); else as the image's non-root user.",
    )
    min_uid = Integer(1000, config=True, help="The lowest uid a hub user is mapped to.")
    workspace_root = Unicode(
        HOME,
        config=True,
        help="Each user's workspace root, mounted at the same path in their kernels and "
        "jobs (which then run as their OS uid:gid): empty for the user's home directory "
        "from the password database, or an absolute path template with ${user} (say "
        "/srv/work/${user}). It must be a folder owned by that user's OS account, else "
        "nothing is mounted. A caller names only the working directory, which must lie "
        "inside it (symlinks resolved).",
    )

    queue_timeout = Float(
        300.0,
        config=True,
        help="Seconds a start over a budget with on_exceed: queue waits for room before it "
        "is refused naming the budget (keep it under the servers' 600 s create timeout; 0: "
        "such budgets refuse at once too).",
    )
    queue_poll = Float(
        2.0,
        config=True,
        help="Seconds between two looks, for a queued start, at workloads that ended by "
        "themselves (a removal or stop through the launcher wakes the queue at once).",
    )

    aliases = {
        "config": "LauncherApp.dss_config",
        "ip": "LauncherApp.ip",
        "port": "LauncherApp.port",
        "base-url": "LauncherApp.base_url",
        "id": "LauncherApp.launcher_id",
        "secret-file": "LauncherApp.secret_file",
        "poll-interval": "LauncherApp.poll_interval",
        "workspace-root": "LauncherApp.workspace_root",
        "queue-timeout": "LauncherApp.queue_timeout",
    }

    @validate("workspace_root")
    def _check_workspace_root(self, proposal: Any) -> str:
        problem = root_template_problem(proposal["value"])
        if problem:
            raise TraitError(f"workspace_root {proposal['value']!r}: {problem}")
        return proposal["value"]

    @default("ip")
    def _ip(self) -> str:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "")).hostname or "127.0.0.1"

    @default("port")
    def _port(self) -> int:
        return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "")).port or 8790

    @default("base_url")
    def _base_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")

    @default("launcher_id")
    def _launcher_id(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME", "dss-launcher")

    def start(self) -> None:
        import logging

        if not logging.getLogger().handlers:
            logging.basicConfig(format="[launcher %(levelname)s] %(message)s")
        for name in ("dss_containers.launcher", "tornado.access"):
            logging.getLogger(name).setLevel(logging.INFO)
        # the launcher's own code must reach the engines, never another launcher
        os.environ.pop(wire.URL_ENV, None)
        os.environ.pop(wire.SECRET_ENV, None)
        asyncio.run(self.serve())

    def authenticator(self) -> tuple[Authenticator, HubClient | None]:
        hub_url, hub_token = (
            os.environ.get("JUPYTERHUB_API_URL"),
            os.environ.get("JUPYTERHUB_API_TOKEN"),
        )
        if hub_url and hub_token and not self.secret_file:
            hub = HubClient(hub_url, hub_token)
            return HubAuthenticator(hub, self.launcher_id, self.token_cache_seconds), hub
        if self.secret_file:
            secret = Path(self.secret_file).read_text().strip()
            return SecretAuthenticator(secret), None
        raise SystemExit(
            "the launcher needs a way to authenticate callers: run it as a JupyterHub "
            "service ($JUPYTERHUB_API_URL and $JUPYTERHUB_API_TOKEN) or give --secret-file"
        )

    async def serve(self) -> None:
        authenticator, hub = self.authenticator()
        found = find_config_path(self.dss_config)
        launcher = Launcher(
            str(found) if found else None,
            self.launcher_id,
            hub_bound=hub is not None,
            map_os_users=self.map_os_users,
            min_uid=self.min_uid,
            workspace_root=self.workspace_root,
            queue_timeout=self.queue_timeout,
            queue_poll=self.queue_poll,
        )
        loaded = await launcher.load()  # a broken file fails here, not on the first call
        app = WebApplication(handlers(self.base_url, launcher, authenticator))
        server = HTTPServer(app, max_body_size=wire.MAX_BODY_BYTES, xheaders=False)
        server.listen(self.port, self.ip)
        mode = "JupyterHub" if hub else "shared secret"
        log.warning(
            "dss-containers launcher %r on http://%s:%d%s (%s mode, config %s)",
            self.launcher_id,
            self.ip,
            self.port,
            self.base_url,
            mode,
            loaded.config_file.source,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        reaper = (
            asyncio.create_task(reap_forever(launcher, hub, self.poll_interval)) if hub else None
        )
        await stop.wait()
        if reaper:
            reaper.cancel()
        server.stop()
