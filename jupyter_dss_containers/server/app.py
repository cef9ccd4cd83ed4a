"""The server extension application: wiring only; each job lives in its own module."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.gateway.gateway_client import GatewayClient
from traitlets import Bool, Type, Unicode

from .. import ownership
from .._version import __version__
from ..config import load_config
from ..jobs.service import JobService
from ..kernelspecs import ContainerKernelSpecManager
from ..launcherd.wire import URL_ENV as LAUNCHER_URL_ENV
from ..permissions import register_identity_resolver
from ..pool import WarmPool
from ..reapscope import users_seen
from ..workspace import DEFAULT_USER_ROOT
from .contents import UserContentsManager
from .identity import call_context_identity, is_multi_user
from .kernels import OwnedKernelManager, OwnedSessionManager
from .owners import inherit_owner
from .policy import SharedPartsAuthorizer, unsafe_parts
from .proxy import PROXY_ROUTES
from .routes import CORE_ROUTE_FIXES


class DSSContainersExtension(ExtensionApp):
    """Container kernels and jobs for a Jupyter server."""

    name = "jupyter_dss_containers"
    version = __version__

    config_file = Unicode(
        None, allow_none=True, config=True, help="Config file (default: the usual search)."
    )
    launcher_url = Unicode(
        None,
        allow_none=True,
        config=True,
        help="URL of the trusted launcher (jupyter dss-containers launcher): kernels and jobs "
        "start through it and the config comes from it, so this server holds no engine "
        "credentials and no config file. Exported as $DSS_CONTAINERS_LAUNCHER_URL, which host "
        "kernels running %%container inherit (setting that variable does the same).",
    )
    reap_on_start = Bool(
        True,
        config=True,
        help="At start-up, remove container kernels and jobs that no live process owns.",
    )

    live_kernelspecs = Bool(
        True,
        config=True,
        help="Offer the container kernels from the config file in the kernel picker, by "
        "using ContainerKernelSpecManager when the server has the stock kernel spec manager "
        "(the package also sets it in jupyter_server_config.d, which a custom config path "
        "may not read).",
    )

    owned_kernels = Bool(
        True,
        config=True,
        help="Under a multi-user identity provider, let each kernel answer only to the user "
        "who started it on jupyter_server's own kernel and session routes, by using "
        "OwnedKernelManager and OwnedSessionManager where the server would use the stock "
        "managers.",
    )

    per_user_contents = Bool(
        True,
        config=True,
        help="Under a multi-user identity provider, root each user's contents API at their "
        "own folder (the config file's defaults.user_root, default ${root_dir}/${user}), by "
        "using UserContentsManager where the server would use the stock contents manager.",
    )

    inherit_owner = Bool(
        True,
        config=True,
        help="On a server running as root, give what the contents API saves (new folders, "
        "notebooks, uploads, saves) the owner of the folder it is saved in, where that "
        "folder is not root's: the notebook's kernel runs as that owner (never as root) "
        "and can then write beside its notebook.",
    )

    trust_site_managers = Bool(
        False,
        config=True,
        help="Start a server whose identity provider names several users although its "
        "kernel, session or contents manager (or a gateway) is shared by all users: only "
        "for a site whose own managers keep users apart. Otherwise such a server refuses "
        "to start, saying which part is shared.",
    )

    warm_pool_class = Type(
        WarmPool,
        klass=WarmPool,
        config=True,
        help="The warm pool's class (a WarmPool subclass), built with this extension as its "
        "parent, so c.WarmPool.* in jupyter_server_config.py applies; the server's kernels "
        "take from it.",
    )

    def _link_jupyter_server_extension(self, serverapp) -> None:
        super()._link_jupyter_server_extension(serverapp)
        # before the server builds its managers (init_configurables comes later), and only
        # where it would build the stock ones: not a site's own, nor a gateway's
        ours = []
        if self.owned_kernels and not GatewayClient.instance(parent=serverapp).gateway_enabled:
            ours += [
                ("kernel_manager_class", OwnedKernelManager),
                ("session_manager_class", OwnedSessionManager),
            ]
        if self.per_user_contents:
            ours.append(("contents_manager_class", UserContentsManager))
        for trait, manager in ours:
            if not serverapp.trait_has_value(trait):
                setattr(serverapp, trait, manager)

    def initialize_settings(self) -> None:
        if self.launcher_url:
            os.environ[LAUNCHER_URL_ENV] = self.launcher_url
        register_identity_resolver(call_context_identity)
        self._share_nothing_between_users()
        if self.live_kernelspecs:
            self._use_container_kernelspecs()
        ksm = self.serverapp.kernel_spec_manager
        if isinstance(ksm, ContainerKernelSpecManager) and self.config_file:
            ksm.dss_config_file = self.config_file
        # REST jobs run for users whose folders the server does not mount: no cwd mount
        self.job_service = JobService(parent=self, config_file=self.config_file, mount_cwd=False)
        if self.job_service.store_dir is None:  # a server's jobs outlive it (issue #8)
            self.job_service.store_dir = str(Path(jupyter_data_dir()) / "dss_containers" / "jobs")
        self.warm_pool = self.warm_pool_class(parent=self, config_file=self.config_file)
        if self.inherit_owner and os.geteuid() == 0:
            self.serverapp.contents_manager.register_post_save_hook(inherit_owner)
        self.settings["dss_containers"] = self

    def _share_nothing_between_users(self) -> None:
        """Per-user managers and the shared-parts authorizer; refuse a multi-user server
        whose shared parts cannot be made per user."""
        serverapp = self.serverapp
        try:
            defaults = load_config(self.config_file).defaults
        except Exception as exc:  # a broken file must not stop a server; its users get less
            self.log.warning("dss-containers: config file not read at start-up: %s", exc)
            defaults = {}
        if isinstance(serverapp.contents_manager, UserContentsManager):
            serverapp.contents_manager.user_root_template = defaults.get(
                "user_root", DEFAULT_USER_ROOT
            )
        if isinstance(serverapp.kernel_manager, OwnedKernelManager):
            serverapp.kernel_manager.dss_config_file = self.config_file
        authorizer = SharedPartsAuthorizer(
            parent=serverapp,
            log=self.log,
            identity_provider=serverapp.identity_provider,
            inner=serverapp.authorizer,
            extension=self,
        )
        serverapp.authorizer = authorizer
        self.settings["authorizer"] = authorizer
        if not is_multi_user(serverapp.identity_provider):
            return
        problems = unsafe_parts(serverapp)
        if problems and self.trust_site_managers:
            for problem in problems:
                self.log.warning("dss-containers: trusted by trust_site_managers: %s", problem)
        elif problems:
            kind = type(serverapp.identity_provider)
            for problem in problems:
                self.log.critical(
                    "dss-containers: refusing to start: the identity provider %s.%s names "
                    "several users, but %s (set DSSContainersExtension.trust_site_managers "
                    "= True only if it keeps users apart)",
                    kind.__module__,
                    kind.__qualname__,
                    problem,
                )
            raise SystemExit(1)

    def _use_container_kernelspecs(self) -> None:
        serverapp = self.serverapp
        if type(serverapp.kernel_spec_manager) is not KernelSpecManager:
            return  # already ours, or a site's own manager: leave it
        manager = ContainerKernelSpecManager(parent=serverapp)
        serverapp.kernel_spec_manager = manager
        serverapp.kernel_manager.kernel_spec_manager = manager
        self.settings["kernel_spec_manager"] = manager

    def initialize_handlers(self) -> None:
        from .handlers import HANDLERS

        self.handlers.extend(HANDLERS)
        self.handlers.extend(CORE_ROUTE_FIXES)
        self.handlers.extend(PROXY_ROUTES)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        # in the background: a slow or dead daemon must not delay the server's start
        self._starting = asyncio.get_running_loop().create_task(self._reap_then_fill())
        # model services outlive servers: this one replaces their removed/killed replicas
        from .handlers.services import watch

        self._services_watch = asyncio.get_running_loop().create_task(
            watch(self.config_file, self.log)
        )

    async def _reap_then_fill(self) -> None:
        try:  # first: the jobs it takes over are adopted, so the reaper leaves them
            await self.job_service.recover()
        except Exception as exc:  # a broken file or a dead daemon must not stop the server
            self.log.warning("dss-containers: stored jobs not recovered: %s", exc)
        if self.reap_on_start:
            await self._reap()  # before the pools fill, so nothing of ours is mistaken
        self.warm_pool.start()
        try:  # job runners for configs with warm_pool: {jobs: N}
            config_file = await asyncio.to_thread(load_config, self.config_file)
            await self.job_service.job_pool.prefill(config_file)
        except Exception as exc:
            self.log.warning("dss-containers: job pools not filled: %s", exc)

    async def stop_extension(self) -> None:
        # nothing raised here may escape: a failed stop leaves the server running on SIGTERM
        if getattr(self, "_services_watch", None) is not None:
            self._services_watch.cancel()  # the services themselves keep serving
        try:
            await self.warm_pool.stop()
        except Exception as exc:
            self.log.warning("dss-containers: warm pools not stopped: %s", exc)
        try:  # jobs die with the server that runs them: cancel them, leave no container
            await self.job_service.shutdown()
        except Exception as exc:
            self.log.warning("dss-containers: jobs not all cancelled: %s", exc)

    async def _reap(self) -> None:
        try:
            config_file = await asyncio.to_thread(load_config, self.config_file)
            configs = list(config_file.execution_configs.values())
            # with namespace: dss-${user}, the namespaces of the users it knows too
            owners = {job.owner for job in self.job_service.list()}
            users = users_seen(config_file, owners)
            removed, skipped = await ownership.reap_orphans(configs, users=users)
        except Exception as exc:  # a broken file must not stop the server
            self.log.warning("dss-containers: start-up reaping skipped: %s", exc)
            return
        for name, why in skipped.items():
            self.log.warning("dss-containers: could not reap for config %s: %s", name, why)
        for workload in removed:
            self.log.info("dss-containers: reaped orphaned %s", workload.name)
