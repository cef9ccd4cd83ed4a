"""The image subcommands: ``build-base-image``, ``build-env``, ``images``, ``copy-image``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rich.table import Table
from traitlets import Bool, Unicode

from .. import images
from ..cli_progress import ConsoleProgress
from ..config import CodeEnvSpec, ConfigFile, DockerSettings, format_size
from .base import COMMON_ALIASES, CommandError, DSSCommand, console, errors


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
        from ..backends.docker import docker_client

        client = docker_client(DockerSettings())
        for name in names:
            spec = config_file.base_images[name]
            try:
                with ConsoleProgress() as progress:
                    tag = images.build_base_image(spec, client, progress=progress, force=self.force)
            except images.ImageBuildError as exc:
                raise CommandError(str(exc)) from None
            size = image_size_text(client.images.get(tag).attrs.get("Size"))
            console.print(f"[green]built[/] {name}: {tag} ({size})")
            for registry_url in _registries_of(config_file, name):
                try:
                    pushed = images.push_image(client, tag, registry_url)
                except images.RegistryError as exc:
                    raise CommandError(str(exc)) from None
                console.print(f"[green]pushed[/] {name}: {pushed.pinned}")


def image_size_text(size: int | None) -> str:
    """``1234567890`` -> ``1.1 GiB``: an image's size, rounded (limits use ``format_size``)."""
    if not size:
        return "-"
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if size >= 1024**power:
            return f"{size / 1024**power:.1f} {unit}"
    return f"{size} B"


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
        from ..backends.docker import docker_client
        from ..images import CodeEnvError, build_env_image, env_recipe

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
    description = "List base, code-env and server images: built, stale or missing, size, age."

    def run(self) -> None:
        from ..backends.docker import docker_client
        from ..images import format_age, image_states

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
                image_size_text(s["size"]),
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


class CopyImageCommand(DSSCommand):
    description = (
        "Copy configs' images from the local daemon into their own daemons (remote, Podman) "
        "when no registry is used: docker save | docker load, streamed."
    )

    def run(self) -> None:
        from ..transfer import ensure_image

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
