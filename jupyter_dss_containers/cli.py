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
from traitlets import Bool, Integer, Unicode

from . import images, ownership, summary
from ._version import __version__
from .backends import BackendError, backend_for
from .cli_progress import ConsoleProgress
from .config import (
    CodeEnvSpec,
    ConfigError,
    ConfigFile,
    ExecutionConfig,
    format_size,
    load_config,
)
from .kernelspecs import container_kernel_specs, install_kernel_specs
from .permissions import PermissionDenied, permitted_configs, process_identity

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
        placements = {c.name: summary.placement(c, identity.username) for c in configs}
        rows = [
            {
                "name": c.name,
                "backend": c.backend,
                "image": c.image,
                "where": placements[c.name].where,
                "resources": placements[c.name].summary,
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
                with ConsoleProgress() as progress:
                    tag = images.build_base_image(spec, client, progress=progress, force=self.force)
            except images.ImageBuildError as exc:
                raise CommandError(str(exc)) from None
            console.print(f"[green]built[/] {name}: {tag}")
            for registry_url in _registries_of(config_file, name):
                try:
                    pushed = images.push_image(client, tag, registry_url)
                except images.RegistryError as exc:
                    raise CommandError(str(exc)) from None
                console.print(f"[green]pushed[/] {name}: {pushed.pinned}")


def _registries_of(config_file: ConfigFile, base_image: str) -> list[str]:
    """The registries of the configs that run a base image (each pushed to once)."""
    configs = config_file.execution_configs.values()
    return sorted({c.registry for c in configs if c.image == base_image and c.registry})


class BuildEnvCommand(DSSCommand):
    description = (
        "Build a code env's image for each config it is available for (or --config C); "
        "push it to the config's registry."
    )
    execution_config = Unicode(None, allow_none=True, config=True, help="Only this config.")
    wheelhouse = Unicode(None, allow_none=True, config=True, help="A folder of wheels to use.")
    online = Bool(False, config=True, help="pip reads the package index inside the build.")
    force = Bool(False, config=True, help="Rebuild even when the content tag exists.")
    aliases = {
        **COMMON_ALIASES,
        "config": "BuildEnvCommand.execution_config",
        "config-file": "DSSCommand.dss_config",
        "wheelhouse": "BuildEnvCommand.wheelhouse",
    }
    flags = {
        "force": ({"BuildEnvCommand": {"force": True}}, "Rebuild even if up to date."),
        "online": ({"BuildEnvCommand": {"online": True}}, "Install from the package index."),
    }

    def run(self) -> None:
        from .backends.docker import docker_client
        from .config import DockerSettings
        from .images import CodeEnvError, build_env_image, env_recipe

        if len(self.extra_args) != 1:
            raise CommandError("name one code env: build-env ENV [--config C]")
        config_file = self.load()
        env_name = self.extra_args[0]
        env = config_file.code_envs.get(env_name)
        if env is None:
            known = ", ".join(sorted(config_file.code_envs)) or "none"
            raise CommandError(
                f"no code environment named {env_name!r} in {config_file.source} (defined: {known})"
            )
        configs = (
            [self.execution_config] if self.execution_config else _configs_of(config_file, env)
        )
        if not configs:
            raise CommandError(f"code environment {env_name!r} is available for no configuration")
        try:
            for config_name in configs:
                env_recipe(config_file, env_name, config_name)
        except CodeEnvError as exc:
            raise CommandError(str(exc)) from None
        for config_name in configs:
            config = config_file.get(config_name)
            settings = config.docker if config.backend == "docker" else DockerSettings()
            client = docker_client(settings)
            try:
                with ConsoleProgress() as progress:
                    result = build_env_image(
                        config_file,
                        env_name,
                        config_name,
                        client,
                        progress,
                        force=self.force,
                        wheelhouse=self.wheelhouse,
                        online=self.online,
                    )
            except images.ImageBuildError as exc:
                raise CommandError(str(exc)) from None
            state = "built" if result.built else "up to date"
            pushed = f" (pushed {result.push.pinned})" if result.push else ""
            console.print(f"[green]{state}[/] {env_name} for {config_name}: {result.tag}{pushed}")
            if result.not_mirrored:
                console.print(
                    f"  {len(result.not_mirrored)} not mirrored: jupyter dss-containers images"
                )


def _configs_of(config_file: ConfigFile, env: CodeEnvSpec) -> list[str]:
    return [c for c in config_file.execution_configs if env.is_available_for(c)]


class ImagesCommand(DSSCommand):
    description = "List base and code-env images: built, stale or missing, with size and age."

    def run(self) -> None:
        from .backends.docker import docker_client
        from .config import DockerSettings
        from .images import format_age, image_states

        config_file = self.load()
        states = [s.as_dict() for s in image_states(config_file, docker_client(DockerSettings()))]
        if self.as_json:
            self.emit(states)
            return
        table = Table(title=f"Images ({config_file.source})")
        for column in ("kind", "name", "config", "state", "image", "size", "age"):
            table.add_column(column)
        colour = {"built": "green", "stale": "yellow", "missing": "red"}
        for s in states:
            table.add_row(
                s["kind"],
                s["name"],
                s["config"] or "-",
                f"[{colour[s['state']]}]{s['state']}[/]",
                s["ref"],
                format_size(s["size"]) if s["size"] else "-",
                format_age(s["age_seconds"]),
            )
        console.print(table)
        for s in states:
            if s["mirror"] is not None and s["state"] != "stale":
                _print_not_mirrored(s)


#: how ``images`` names the reasons a mirror leaves a package out
MIRROR_REASONS = {
    "editable": "editable/local",
    "local": "editable/local",
    "no-wheel": "no wheel",
    "download-failed": "download failed",
}


def _print_not_mirrored(state: dict[str, Any]) -> None:
    """What a mirroring env could not mirror, one line each, after the images table."""
    from rich.markup import escape

    mirror = state["mirror"]
    left_out = mirror["not_mirrored"]
    head = f"{state['name']} ({state['config']}) mirrors {mirror['source']}"
    checked = "" if mirror["wheels_checked"] else "; wheels are checked when it is built"
    console.print(escape(f"{head}: {len(left_out)} not mirrored{checked}"))
    for entry in left_out:
        reason = MIRROR_REASONS.get(entry["reason"], entry["reason"])
        console.print(escape(f"  {entry['requirement']}  [{reason}] {entry['detail']}"))


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


class CleanupCommand(DSSCommand):
    description = (
        "Remove containers and pods of ours that no running process owns; with --images, "
        "also the older builds of the file's base and code-env images on the local daemon."
    )
    everything = Bool(False, config=True, help="Remove all of ours, owned or not.")
    images = Bool(False, config=True, help="Also remove stale builds of the file's images.")
    flags = {
        **JSON_FLAG,
        "all": ({"CleanupCommand": {"everything": True}}, "Remove all of ours."),
        "images": ({"CleanupCommand": {"images": True}}, "Also remove stale image builds."),
    }

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
        if self.images:
            self._prune_images(config_file)

    def _prune_images(self, config_file) -> None:
        from .backends.docker import docker_client
        from .config import DockerSettings
        from .images import prune_stale_images

        pruned, kept = prune_stale_images(config_file, docker_client(DockerSettings()))
        for state in pruned:
            where = f" for {state.config}" if state.config else ""
            console.print(f"removed image {state.ref} (stale {state.kind} {state.name}{where})")
        for ref, why in kept.items():
            errors.print(f"[yellow]kept[/] {ref}: {why}", highlight=False)
        console.print(f"{len(pruned)} stale images removed")


class CopyImageCommand(DSSCommand):
    description = (
        "Copy configs' images from the local daemon into their own daemons (remote, Podman) "
        "when no registry is used: docker save | docker load, streamed."
    )

    def run(self) -> None:
        from .transfer import ensure_image

        config_file = self.load()
        if not self.extra_args:
            raise CommandError("name the execution configs whose images to copy")
        for name in self.extra_args:
            config = config_file.get(name)
            if config.backend != "docker":
                raise CommandError(f"execution config {name!r} is not a Docker config")
            ref = images.resolve_image(config_file, config)
            last = [0.0]

            def progress(sent: int, total: int | None, ref: str = ref, last=last) -> None:
                if time.monotonic() - last[0] >= 1 or (total and sent >= total):
                    last[0] = time.monotonic()
                    of = f" of ~{format_size(total)}" if total else ""
                    errors.print(f"{ref}: {format_size(sent)}{of} sent", highlight=False)

            result = asyncio.run(ensure_image(ref, config.docker, progress=progress))
            where = config.docker.host or "the local daemon"
            if result.copied:
                console.print(
                    f"[green]copied[/] {ref} to {where} ({format_size(result.bytes_sent)} "
                    f"in {result.seconds:.1f} s)"
                )
            else:
                console.print(f"{ref} is already on {where}")


class JobsCommand(DSSCommand):
    description = "List running job containers (any process's) on the configs' daemons."

    def run(self) -> None:
        from .jobs.workloads import job_workloads, row

        found, skipped = asyncio.run(job_workloads(self.load()))
        rows = [row(w) for _, w in found]
        for name, why in skipped.items():
            errors.print(f"[yellow]skipped[/] {name}: {why}", highlight=False)
        if self.as_json:
            self.emit(rows)
            return
        table = Table(title="Jobs")
        for column in ("id", "config", "owner", "state", "container"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["id"], r["config"], r["owner"], r["state"], r["container"])
        console.print(table)


class LogsCommand(DSSCommand):
    description = "Print the output of a job so far: logs JOB_ID."
    tail = Integer(200, config=True, help="Number of last lines.")
    aliases = {**COMMON_ALIASES, "tail": "LogsCommand.tail"}

    def run(self) -> None:
        from .jobs.workloads import find_job

        if len(self.extra_args) != 1:
            raise CommandError("name one job: logs JOB_ID")

        async def logs() -> str:
            backend, workload = await find_job(self.load(), self.extra_args[0])
            return await backend.logs(workload.id, tail=self.tail)

        print(asyncio.run(logs()), end="")


class CancelCommand(DSSCommand):
    description = "Cancel jobs: stop and remove their containers (cancel JOB_ID...)."

    def run(self) -> None:
        from .jobs.workloads import find_job

        if not self.extra_args:
            raise CommandError("name the jobs to cancel: cancel JOB_ID...")

        async def cancel(job_id: str) -> None:
            backend, workload = await find_job(self.load(), job_id)
            await backend.remove(workload.id)

        for job_id in self.extra_args:
            asyncio.run(cancel(job_id))
            console.print(f"cancelled {job_id}")


class DSSContainersApp(DSSCommand):
    name = "jupyter-dss-containers"
    description = "Run Jupyter kernels and jobs in containers from named execution configurations."
    subcommands = {
        "configs": (ConfigsCommand, ConfigsCommand.description),
        "jobs": (JobsCommand, JobsCommand.description),
        "logs": (LogsCommand, LogsCommand.description),
        "cancel": (CancelCommand, CancelCommand.description),
        "validate": (ValidateCommand, ValidateCommand.description),
        "doctor": (DoctorCommand, DoctorCommand.description),
        "build-base-image": (BuildBaseImageCommand, BuildBaseImageCommand.description),
        "build-env": (BuildEnvCommand, BuildEnvCommand.description),
        "build-server-image": (
            "jupyter_dss_containers.cli_server_image.BuildServerImageCommand",
            "Build the Jupyter server image (JupyterLab with this extension), offline.",
        ),
        "images": (ImagesCommand, ImagesCommand.description),
        "kernelspecs": (KernelspecsCommand, KernelspecsCommand.description),
        "cleanup": (CleanupCommand, CleanupCommand.description),
        "copy-image": (CopyImageCommand, CopyImageCommand.description),
        "launcher": (
            "jupyter_dss_containers.launcherd.app.LauncherApp",
            "Run the trusted launcher (a JupyterHub service, or alone with a shared secret).",
        ),
    }

    def run(self) -> None:
        self.print_subcommands()
        self.exit(2)


def main(argv: list[str] | None = None) -> None:
    DSSContainersApp.launch_instance(argv if argv is not None else sys.argv[1:])
