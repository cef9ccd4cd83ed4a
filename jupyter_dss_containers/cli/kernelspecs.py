"""``kernelspecs install`` and ``kernelspecs list``: specs for plain jupyter_client users."""

from __future__ import annotations

from rich.table import Table
from traitlets import Bool, Unicode

from ..kernelspecs import container_kernel_specs, install_kernel_specs
from ..permissions import process_identity
from .base import COMMON_ALIASES, CommandError, DSSCommand, console


class KernelspecsInstallCommand(DSSCommand):
    description = "Write the container kernel specs you may use for plain jupyter_client users."
    user = Bool(True, config=True, help="Install for the current user (the default).")
    prefix = Unicode(None, allow_none=True, config=True, help="Install under this prefix instead.")
    aliases = {**COMMON_ALIASES, "prefix": "KernelspecsInstallCommand.prefix"}

    def run(self) -> None:
        config_file = self.load()
        paths = install_kernel_specs(
            config_file,
            process_identity(config_file),
            user=self.prefix is None,
            prefix=self.prefix,
            config_path=self.dss_config,
        )
        for path in paths:
            console.print(f"installed {path}")
        if not paths:
            console.print("no execution configuration is open to you: nothing installed")


class KernelspecsListCommand(DSSCommand):
    description = "List the container kernel specs derived from the config file."

    def run(self) -> None:
        config_file = self.load()
        specs = container_kernel_specs(config_file, process_identity(config_file))
        if self.as_json:
            self.emit(specs)
            return
        table = Table(title="Container kernel specs")
        table.add_column("name")
        table.add_column("display name")
        table.add_column("config")
        table.add_column("code env")
        for name, spec in specs.items():
            meta = spec["metadata"]["dss_containers"]
            table.add_row(
                name, spec["display_name"], meta["execution_config"], meta["code_env"] or "-"
            )
        console.print(table)


class KernelspecsCommand(DSSCommand):
    description = "Kernel specs: install or list."
    subcommands = {
        "install": (KernelspecsInstallCommand, KernelspecsInstallCommand.description),
        "list": (KernelspecsListCommand, KernelspecsListCommand.description),
    }

    def run(self) -> None:
        raise CommandError("say 'install' or 'list'")
