"""``jupyter dss-containers``: inspect configs, build images, install kernel specs, clean up.

Each subcommand is a small traitlets application, so its options can also be set in
``jupyter_dss_containers_config.py`` like any Jupyter application's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from jupyter_core.application import JupyterApp
from rich.console import Console
from rich.table import Table
from traitlets import Bool, Unicode

from . import images, ownership
from ._version import __version__
from .backends import BackendError, backend_for
from .config import ConfigError, ConfigFile, ExecutionConfig, format_size, load_config
from .kernelspecs import container_kernel_specs, install_kernel_specs
from .permissions import PermissionDenied, permitted_configs, process_identity

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

COMMON_ALIASES = {"config": "DSSCommand.config_file"}
JSON_FLAG = {"json": ({"DSSCommand": {"as_json": True}}, "Print JSON instead of a table.")}


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""


class DSSCommand(JupyterApp):
    """What every subcommand shares: ``--config`` and one-line errors."""

    version = __version__
    config_file = Unicode(None, allow_none=True, config=True, help="The config file to use.")
    as_json = Bool(False, config=True, help="Print JSON instead of a table.")
    aliases = COMMON_ALIASES
    flags = JSON_FLAG

    def load(self) -> ConfigFile:
        return load_config(self.config_file)

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


def _resources(config: ExecutionConfig) -> str:
    if config.backend == "kubernetes":
        return json.dumps(config.kubernetes.get("resources", {}))
    d = config.docker
    parts = [
        f"memory {format_size(d.memory)}" if d.memory else "",
        f"{d.cpus:g} CPU" if d.cpus else "",
    ]
    parts += [f"gpus {d.gpus}" if d.gpus is not None else ""]
    return ", ".join(p for p in parts if p) or "no limits"


def _where(config: ExecutionConfig) -> str:
    if config.backend == "kubernetes":
        k = config.kubernetes
        return f"context {k.get('context', '(current)')}, namespace {k.get('namespace', 'default')}"
    from .backends.docker import daemon_url

    return daemon_url(config.docker)


class ConfigsCommand(DSSCommand):
    description = "List the execution configurations you may use."

    show_all = Bool(False, config=True, help="List every configuration, not only yours.")
    flags = {**JSON_FLAG, "all": ({"ConfigsCommand": {"show_all": True}}, "List all configs.")}

    def run(self) -> None:
        config_file = self.load()
        identity = process_identity(config_file)
        configs = (
            list(config_file.execution_configs.values())
            if self.show_all
            else permitted_configs(identity, config_file)
        )
        rows = [
            {
                "name": c.name,
                "backend": c.backend,
                "image": c.image,
                "where": _where(c),
                "resources": _resources(c),
                "code_envs": [e.name for e in config_file.envs_for(c.name)],
                "groups": list(c.groups),
                "description": c.description,
            }
            for c in configs
        ]
        if self.as_json:
            self.emit(rows)
            return
        table = Table(title=f"Execution configurations ({config_file.source})")
        for column in ("name", "backend", "image", "where", "resources", "code envs", "groups"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r["name"],
                r["backend"],
                r["image"],
                r["where"],
                r["resources"],
                ", ".join(r["code_envs"]) or "-",
                ", ".join(r["groups"]) or "-",
            )
        console.print(table)


class ValidateCommand(DSSCommand):
    description = "Validate the config file; print one line per problem and exit 1 if any."

    def run(self) -> None:
        config_file = self.load()
        n = len(config_file.execution_configs)
        console.print(f"{config_file.source}: valid ({n} execution configuration{'s' * (n != 1)})")


class DoctorCommand(DSSCommand):
    description = (
        "Check that every configuration's daemon or cluster answers and its image is there."
    )

    def run(self) -> None:
        config_file = self.load()
        results = asyncio.run(self._check_all(config_file))
        if self.as_json:
            self.emit(results)
        else:
            table = Table(title="dss-containers doctor")
            for column in ("config", "status", "daemon / cluster", "engine", "image", "seconds"):
                table.add_column(column)
            for r in results:
                table.add_row(
                    r["config"],
                    "[green]ok[/]" if r["ok"] else f"[red]{r['error']}[/]",
                    r.get("daemon", ""),
                    r.get("engine", ""),
                    r.get("image", ""),
                    f"{r['seconds']:.2f}",
                )
            console.print(table)
        if not all(r["ok"] for r in results):
            self.exit(1)

    async def _check_all(self, config_file: ConfigFile) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(self._check(config_file, c) for c in config_file.execution_configs.values())
            )
        )

    @staticmethod
    async def _check(config_file: ConfigFile, config: ExecutionConfig) -> dict[str, Any]:
        began = time.perf_counter()
        result: dict[str, Any] = {"config": config.name, "ok": True}
        try:
            backend = backend_for(config)
            info = await asyncio.wait_for(backend.check(), timeout=10)
            result.update(
                daemon=info.get("daemon", ""), engine=f"{info['engine']} {info['version']}"
            )
            if config.backend == "docker":
                ref = images.resolve_image(config_file, config)
                present = await asyncio.to_thread(
                    lambda: images.image_exists(backend.client(), ref)  # type: ignore[attr-defined]
                )
                result["image"] = f"{ref} ({'present' if present else 'missing'})"
                if not present:
                    base = config_file.base_image_of(config)
                    hint = (
                        f"jupyter dss-containers build-base-image {base.name}"
                        if base
                        else f"pull {ref}"
                    )
                    result.update(ok=False, error=f"image {ref} missing; run: {hint}")
        except (BackendError, TimeoutError) as exc:
            result.update(ok=False, error=str(exc) or "no answer within 10 s")
        result["seconds"] = time.perf_counter() - began
        return result


class BuildBaseImageCommand(DSSCommand):
    description = "Build a base image (content-addressed: an unchanged one is not rebuilt)."
    force = Bool(False, config=True, help="Rebuild even when the content tag exists.")
    flags = {"force": ({"BuildBaseImageCommand": {"force": True}}, "Rebuild even if up to date.")}

    def run(self) -> None:
        config_file = self.load()
        names = self.extra_args or ["default"]
        for name in names:
            if name not in config_file.base_images:
                known = ", ".join(sorted(config_file.base_images)) or "none"
                raise CommandError(
                    f"no base image named {name!r} in {config_file.source} (defined: {known})"
                )
        from .backends.docker import docker_client
        from .config import DockerSettings

        client = docker_client(DockerSettings())
        for name in names:
            spec = config_file.base_images[name]
            try:
                with images.ConsoleProgress() as progress:
                    tag = images.build_base_image(spec, client, progress=progress, force=self.force)
            except images.ImageBuildError as exc:
                raise CommandError(str(exc)) from None
            console.print(f"[green]built[/] {name}: {tag}")


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
            config_path=self.config_file,
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


class CleanupCommand(DSSCommand):
    description = "Remove containers and pods of ours that no running process owns."
    everything = Bool(False, config=True, help="Remove all of ours, owned or not.")
    flags = {**JSON_FLAG, "all": ({"CleanupCommand": {"everything": True}}, "Remove all of ours.")}

    def run(self) -> None:
        config_file = self.load()
        removed, skipped = asyncio.run(
            ownership.reap_orphans(list(config_file.execution_configs.values()), self.everything)
        )
        for name, why in skipped.items():
            errors.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)
        for w in removed:
            kernel = w.labels.get(ownership.KERNEL_ID) or w.labels.get(ownership.JOB_ID, "")
            console.print(
                f"removed {w.name} ({w.labels.get(ownership.KIND)} {kernel})", highlight=False
            )
        console.print(f"{len(removed)} removed")


class DSSContainersApp(DSSCommand):
    name = "jupyter-dss-containers"
    description = "Run Jupyter kernels and jobs in containers from named execution configurations."
    subcommands = {
        "configs": (ConfigsCommand, ConfigsCommand.description),
        "validate": (ValidateCommand, ValidateCommand.description),
        "doctor": (DoctorCommand, DoctorCommand.description),
        "build-base-image": (BuildBaseImageCommand, BuildBaseImageCommand.description),
        "kernelspecs": (KernelspecsCommand, KernelspecsCommand.description),
        "cleanup": (CleanupCommand, CleanupCommand.description),
    }

    def run(self) -> None:
        self.print_subcommands()
        self.exit(2)


def main(argv: list[str] | None = None) -> None:
    DSSContainersApp.launch_instance(argv if argv is not None else sys.argv[1:])
