"""``GET images``: the base images of the caller's configs, tagged and looked up."""

from __future__ import annotations

import asyncio
from typing import Any

from tornado import web

from ...config import BaseImageSpec, ConfigFile
from ...permissions import permitted_configs
from .base import DSSAPIHandler, bounded

#: seconds the image listing waits for the local daemon
IMAGES_TIMEOUT = 10.0


def _local_images(tags: dict[str, str | None]) -> tuple[str, dict[str, bool], str | None]:
    """(daemon address, {tag: present}, error) on the local daemon; runs in a thread."""
    from ... import images
    from ...backends.docker import daemon_url, docker_client
    from ...config import DockerSettings

    settings = DockerSettings()
    url = daemon_url(settings)
    try:
        client = docker_client(settings)
        present = {tag: images.image_exists(client, tag) for tag in tags.values() if tag}
    except Exception as exc:
        return url, {}, f"Docker daemon at {url} is unreachable: {exc}"
    return url, present, None


def _content_tags(config_file: ConfigFile, names: list[str]) -> dict[str, Any]:
    """{name: (content tag, None) or (None, why)}; runs in a thread (it may read files)."""
    from ... import images

    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = (images.base_image_tag(config_file.base_images[name]), None)
        except Exception as exc:
            out[name] = (None, str(exc) or type(exc).__name__)
    return out


def image_row(
    spec: BaseImageSpec,
    tag: str | None,
    tag_error: str | None,
    present: dict[str, bool],
    used_by: list[str],
) -> dict[str, Any]:
    """A base image as the API shows it: its recipe, content tag, whether the local daemon
    has that tag (None when unknown) and the caller's configs that use it."""
    return {
        "name": spec.name,
        "description": spec.description,
        "from": spec.from_image,
        "bootstrap": spec.bootstrap,
        "with_r": spec.with_r,
        "with_cuda": spec.with_cuda,
        "tag": tag,
        "present": present.get(tag) if tag else None,
        "error": tag_error,
        "used_by": used_by,
    }


class ImagesHandler(DSSAPIHandler):
    """The base images of the caller's configs, with their content tag and local presence."""

    @web.authenticated
    async def get(self) -> None:
        config_file, identity = await self.caller()
        used_by: dict[str, list[str]] = {}
        for config in permitted_configs(identity, config_file):
            base = config_file.base_image_of(config)
            if base is not None:
                used_by.setdefault(base.name, []).append(config.name)
        names = sorted(used_by)
        tags = await asyncio.to_thread(_content_tags, config_file, names)
        answer, why = await bounded(
            asyncio.to_thread(_local_images, {n: t for n, (t, _) in tags.items()}),
            IMAGES_TIMEOUT,
        )
        daemon, present, error = answer if answer is not None else (None, {}, why)
        rows = [
            image_row(config_file.base_images[name], *tags[name], present, used_by[name])
            for name in names
        ]
        self.send({"daemon": daemon, "error": error, "images": rows})
