"""The server extension application: wiring only; each job lives in its own module."""

from __future__ import annotations

import asyncio

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Unicode

from .. import ownership
from .._version import __version__
from ..config import load_config
from ..permissions import register_identity_resolver
from .identity import call_context_identity


class DSSContainersExtension(ExtensionApp):
    """Container kernels and jobs for a Jupyter server."""

    name = "jupyter_dss_containers"
    version = __version__

    config_file = Unicode(
        None, allow_none=True, config=True, help="Config file (default: the usual search)."
    )
    reap_on_start = Bool(
        True,
        config=True,
        help="At start-up, remove container kernels and jobs that no live process owns.",
    )

    def initialize_settings(self) -> None:
        register_identity_resolver(call_context_identity)
        ksm = self.serverapp.kernel_spec_manager
        if hasattr(ksm, "dss_config_file") and self.config_file:
            ksm.dss_config_file = self.config_file
        self.settings["dss_containers"] = self

    def initialize_handlers(self) -> None:
        from .handlers import HANDLERS

        self.handlers.extend(HANDLERS)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        if self.reap_on_start:
            asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        try:
            config_file = await asyncio.to_thread(load_config, self.config_file)
            configs = list(config_file.execution_configs.values())
            removed, skipped = await ownership.reap_orphans(configs)
        except Exception as exc:  # a broken file must not stop the server
            self.log.warning("dss-containers: start-up reaping skipped: %s", exc)
            return
        for name, why in skipped.items():
            self.log.warning("dss-containers: could not reap for config %s: %s", name, why)
        for workload in removed:
            self.log.info("dss-containers: reaped orphaned %s", workload.name)
