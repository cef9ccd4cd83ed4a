"""Pre-pull: a config's image made present where its workloads run, before a user waits
for it (``jupyter dss-containers prepull CONFIG...``).

- Docker configs: each daemon a config names (each of ``docker.hosts`` too) gets the image
  once: pulled from the config's
  registry when it has one, else streamed from the local daemon (``docker save | docker
  load`` through the SDK, chunk by chunk, in a worker thread: :mod:`.transfer`); a daemon
  that has it already is left alone.
- Kubernetes configs: a DaemonSet pulls it onto every node that could run the config's
  pods (:mod:`.backends.kubernetes.prepull`, followed by
  :mod:`.backends.kubernetes.prepuller`).

Progress goes to a callback, one line per step (a layer pulled, bytes sent, a node ready).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .backends.base import BackendError
from .config import ConfigFile, DockerSettings, ExecutionConfig, format_size

Say = Callable[[str], None]


@dataclass
class DaemonPrepull:
    """What one Docker daemon got: ``present`` (had it), ``pulled`` or ``copied``."""

    configs: list[str]
    daemon: str
    image: str
    action: str
    bytes_sent: int = 0
    seconds: float = 0.0


def config_image(config_file: ConfigFile, config: ExecutionConfig, code_env: str | None) -> str:
    """The image reference the config's workloads run (with ``code_env``: that env's)."""
    from .images import CodeEnvError, resolve_image

    try:
        ref = resolve_image(config_file, config, code_env)
    except CodeEnvError as exc:
        raise BackendError(str(exc)) from None
    if config.backend == "kubernetes":
        from .backends.kubernetes.prepull import prepull_image

        return prepull_image(config, ref)
    return ref


def daemons_of(config: ExecutionConfig) -> list[DockerSettings]:
    """The daemons a Docker config runs on: each of ``docker.hosts``, else its one."""
    return [h.settings for h in config.docker.hosts] or [config.docker]


def _on_daemon(
    config: ExecutionConfig, settings: DockerSettings, ref: str, say: Say
) -> DaemonPrepull:
    """Make ``ref`` present on one of the config's daemons (blocking: run in a thread)."""
    import docker.errors

    from .backends.docker import docker_client
    from .backends.docker.client import daemon_url
    from .images.registry import RegistryError, pull_image
    from .transfer import transfer_image

    url = daemon_url(settings)
    target = docker_client(settings, timeout=600)
    try:
        target.api.inspect_image(ref)
        return DaemonPrepull([config.name], url, ref, "present")
    except docker.errors.ImageNotFound:
        pass
    began = time.monotonic()
    if config.registry:
        say(f"{url}: pulling {ref}")
        try:
            pull_image(target, ref, on_status=lambda line: say(f"{url}: {line}"))
        except RegistryError as exc:
            raise BackendError(f"Docker daemon at {url}: {exc}") from None
        return DaemonPrepull([config.name], url, ref, "pulled", 0, time.monotonic() - began)
    source = docker_client(DockerSettings(), timeout=600)
    if daemon_url(DockerSettings()) == url:
        raise BackendError(
            f"image {ref} is not on the local Docker daemon ({url}) and execution config "
            f"{config.name!r} names no registry to pull it from: build it "
            "(jupyter dss-containers build-base-image / build-env)"
        )
    last = [0.0]

    def progress(sent: int, total: int | None) -> None:
        if time.monotonic() - last[0] >= 1 or (total and sent >= total):
            last[0] = time.monotonic()
            of = f" of ~{format_size(total)}" if total else ""
            say(f"{url}: {ref}: {format_size(sent)}{of} sent")

    say(f"{url}: copying {ref} from the local daemon")
    result = transfer_image(ref, source, target, progress)
    return DaemonPrepull([config.name], url, ref, "copied", result.bytes_sent, result.seconds)


async def prepull_docker(
    config_file: ConfigFile, configs: list[ExecutionConfig], code_env: str | None, say: Say
) -> list[DaemonPrepull]:
    """Each (daemon, image) of the Docker configs once, one after the other."""
    from .backends.docker.client import daemon_url

    done: dict[tuple[str, str, str], DaemonPrepull] = {}
    for config in configs:
        ref = config_image(config_file, config, code_env)
        for settings in daemons_of(config):
            key = (daemon_url(settings), repr(settings.tls), ref)
            if key in done:
                done[key].configs.append(config.name)
                continue
            done[key] = await asyncio.to_thread(_on_daemon, config, settings, ref, say)
    return list(done.values())
