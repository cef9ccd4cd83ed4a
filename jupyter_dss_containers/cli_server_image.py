"""``jupyter dss-containers build-server-image``: JupyterLab with this extension, offline.

Registered in :mod:`.cli` by its import path, so this module may import the CLI's shared
parts without a cycle. The build is :func:`.images.server_image.build_server_image`.
"""

from __future__ import annotations

import getpass
import os
import shlex
from pathlib import Path

from traitlets import Bool, List, Unicode

from .cli import COMMON_ALIASES, CommandError, DSSCommand, console
from .cli_progress import ConsoleProgress
from .images.progress import ImageBuildError
from .images.server_recipe import docker_run_command


class BuildServerImageCommand(DSSCommand):
    description = (
        "Build the Jupyter server image (JupyterLab with this extension) on a base image, "
        "offline from wheels; content-addressed: an unchanged one is not rebuilt."
    )
    base_image = Unicode("default", config=True, help="The base image (a base_images name).")
    wheel = Unicode(
        None,
        allow_none=True,
        config=True,
        help="This package's wheel to install (default: built from the source checkout).",
    )
    tags = List(Unicode(), config=True, help="More names for the image (repo:tag).")
    force = Bool(False, config=True, help="Rebuild even when the content tag exists.")
    aliases = {
        **COMMON_ALIASES,
        "base": "BuildServerImageCommand.base_image",
        "wheel": "BuildServerImageCommand.wheel",
        "tag": "BuildServerImageCommand.tags",
    }
    flags = {
        "force": ({"BuildServerImageCommand": {"force": True}}, "Rebuild even if up to date."),
    }

    def run(self) -> None:
        from .backends.docker import docker_client
        from .config import DockerSettings
        from .images.server_image import build_server_image

        config_file = self.load()
        spec = config_file.base_images.get(self.base_image)
        if spec is None:
            known = ", ".join(sorted(config_file.base_images)) or "none"
            raise CommandError(
                f"no base image named {self.base_image!r} in {config_file.source} "
                f"(defined: {known})"
            )
        client = docker_client(DockerSettings())
        try:
            with ConsoleProgress() as progress:
                tag, built = build_server_image(
                    spec,
                    client,
                    progress,
                    wheel=Path(self.wheel) if self.wheel else None,
                    force=self.force,
                    extra_tags=tuple(self.tags),
                )
        except ImageBuildError as exc:
            raise CommandError(str(exc)) from None
        console.print(f"[green]{'built' if built else 'up to date'}[/] server image: {tag}")
        # root's kernels get no workspace from the launcher (uid < 1000): show a user's line
        user = getpass.getuser() if os.getuid() != 0 else "alice"
        example = docker_run_command(
            tag,
            notebooks=f"/srv/notebooks/{user}",
            launcher_url="http://127.0.0.1:8790/",
            secret_file=f"/srv/dss/{user}.secret",
            user=user,
            uid_gid=f"$(id -u {user}):$(id -g {user})",
        )
        console.print(
            "run it next to a launcher on this host (see the README), e.g.:\n"
            + " ".join(a if a.startswith("$(") else shlex.quote(a) for a in example),
            highlight=False,
            markup=False,
        )
