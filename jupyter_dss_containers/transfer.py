"""Copy an image from one daemon to another without a registry (``docker save | docker load``).

A remote daemon (``tcp://`` with TLS, ``ssh://``) or a Podman socket has its own image
store. When a config names no registry, its image is built on the local daemon and
streamed into the remote one: the archive flows chunk by chunk from the source's
``GET /images/<ref>/get`` into the target's ``POST /images/load``, never whole in memory
nor on disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import docker
import docker.errors

from .backends.base import BackendError, ImageMissing
from .config import DockerSettings

CHUNK_SIZE = 1 << 20
#: called with (bytes sent so far, total size of the image or None)
ProgressCallback = Callable[[int, int | None], None]


class TransferError(BackendError):
    """The image could not be copied; the message names both daemons and why."""


@dataclass
class TransferResult:
    ref: str
    copied: bool  # False when the target had the image already
    bytes_sent: int = 0
    seconds: float = 0.0


def transfer_image(
    ref: str,
    source: docker.DockerClient,
    target: docker.DockerClient,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> TransferResult:
    """Stream ``ref`` from the source daemon into the target daemon unless it is there."""
    if not force and _has_image(target, ref):
        return TransferResult(ref, copied=False)
    began = time.monotonic()
    try:
        image = source.images.get(ref)
    except docker.errors.ImageNotFound:
        raise ImageMissing(
            f"image {ref} is not on the source daemon ({source.api.base_url}) either"
        ) from None
    total = image.attrs.get("Size")
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for chunk in image.save(chunk_size=CHUNK_SIZE, named=True):
            sent += len(chunk)
            if progress is not None:
                progress(sent, total)
            yield chunk

    try:
        messages = target.api.load_image(chunks())
        for message in messages or ():
            if isinstance(message, dict) and message.get("error"):
                raise TransferError(f"loading {ref} into {target.api.base_url}: {message['error']}")
    except docker.errors.APIError as exc:
        raise TransferError(
            f"loading {ref} into {target.api.base_url}: {exc.explanation or exc}"
        ) from None
    except (docker.errors.DockerException, OSError) as exc:  # a daemon went away midway
        raise TransferError(
            f"copying {ref} from {source.api.base_url} to {target.api.base_url} "
            f"stopped after {sent} bytes: {exc}"
        ) from None
    if not _has_image(target, ref):
        raise TransferError(f"{target.api.base_url} accepted the archive but has no image {ref}")
    return TransferResult(ref, copied=True, bytes_sent=sent, seconds=time.monotonic() - began)


async def ensure_image(
    ref: str,
    target: DockerSettings,
    source: DockerSettings | None = None,
    progress: ProgressCallback | None = None,
) -> TransferResult:
    """Make ``ref`` present on the daemon a config names, copying it from the local one."""
    from .backends.docker import docker_client

    def run() -> TransferResult:
        # long transfers: a generous read timeout (the clients are cached per timeout)
        src = docker_client(source or DockerSettings(), timeout=600)
        dst = docker_client(target, timeout=600)
        return transfer_image(ref, src, dst, progress)

    return await asyncio.to_thread(run)


def _has_image(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True
