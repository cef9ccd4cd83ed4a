"""What every subcommand shares: ``--config``, ``--json``, the consoles and one-line errors.

Each subcommand is a small traitlets application, so its options can also be set in
``jupyter_dss_containers_config.py`` like any Jupyter application's.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_core.application import JupyterApp
from rich.console import Console
from traitlets import Bool, Unicode

from .._version import __version__
from ..backends import BackendError
from ..config import ConfigError, ConfigFile, load_config
from ..permissions import PermissionDenied

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

#: the YAML config file; not JupyterApp.config_file, which names a Python config to *execute*
COMMON_ALIASES = {"config": "DSSCommand.dss_config"}
JSON_FLAG = {"json": ({"DSSCommand": {"as_json": True}}, "Print JSON instead of a table.")}


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""


class DSSCommand(JupyterApp):
    """What every subcommand shares: ``--config`` and one-line errors."""

    version = __version__
    dss_config = Unicode(None, allow_none=True, config=True, help="The config file to use.")
    as_json = Bool(False, config=True, help="Print JSON instead of a table.")
    aliases = COMMON_ALIASES
    flags = JSON_FLAG

    def load(self) -> ConfigFile:
        return load_config(self.dss_config)

    def start(self) -> None:
        if self.subapp is not None:
            self.subapp.start()
            return
        try:
            self.run()
        except (ConfigError, BackendError, PermissionDenied, CommandError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
            errors.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
            self.exit(1)

    def run(self) -> None:
        raise NotImplementedError

    def emit(self, data: Any) -> None:
        print(json.dumps(data, indent=2, default=str))
