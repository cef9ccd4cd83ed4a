"""What the builders ask of a Docker daemon: is an image there, a classic build streamed as
events, a tag set or removed, and daemon errors said in words.

Every function here blocks (the docker SDK): call them in a thread from async code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from ..backends.base import BackendUnavailable
from .progress import BuildRun
from .wheels import WHEEL_SUFFIXES

#: where builds write their scratch files (build contexts, bootstrap trees) instead of the
#: system's temporary folder, e.g. a roomier disk
BUILD_TMPDIR_ENV = "DSS_CONTAINERS_BUILD_TMPDIR"
#: a build step's first line: ``Step 2/9 :`` (Docker) or ``STEP 2/9:`` (Podman)
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) ?:", re.IGNORECASE)


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    """Whether the daemon has an image by that reference (no pull)."""
    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def untag(client: docker.DockerClient, ref: str) -> None:
    """Remove a tag (and the image if nothing else names it); a missing one is fine."""
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.api.remove_image(ref)


@contextlib.contextmanager
def daemon_errors(run: BuildRun) -> Iterator[None]:
    """Daemon refusals become build errors; a daemon out of reach says so."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise run.fail(f"Docker daemon: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise BackendUnavailable(f"Docker daemon is unreachable: {exc}") from None


def build_tmpdir() -> str | None:
    """The folder for build scratch files (``$DSS_CONTAINERS_BUILD_TMPDIR``), or the system's."""
    return os.environ.get(BUILD_TMPDIR_ENV) or None


def docker_build(
    client: docker.DockerClient,
    run: BuildRun,
    dockerfile: str,
    wheels: Path | None,
    tag: str,
    network_mode: str | None,
    nocache: bool,
) -> None:
    """A classic build, streamed as events; the tag is set only when every step passed."""
    run.emit("build", f"docker build -> {tag} (network {network_mode or 'default'})", 0.0)
    scratch = build_tmpdir()
    with tempfile.TemporaryFile(dir=scratch) as context:
        try:
            write_context(context, dockerfile, wheels)
        except OSError as exc:  # e.g. ENOSPC: say where, not a traceback
            where = scratch or tempfile.gettempdir()
            why = exc.strerror or str(exc)
            raise run.fail(f"cannot write the build context in {where}: {why}") from None
        context.seek(0)
        try:
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                decode=True,
                pull=False,
                rm=True,
                forcerm=True,
                nocache=nocache,
                network_mode=network_mode,
            )
            follow_build(stream, run)
        except docker.errors.APIError as exc:
            raise run.fail(f"docker build: {exc.explanation or exc}") from None
    if not image_exists(client, tag):
        raise run.fail("docker build finished without producing the image")


def follow_build(stream: Iterable[dict[str, Any]], run: BuildRun) -> None:
    """Turn a build's JSON stream into events and progress; its error entry raises."""
    progress = 0.0
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            run.tail.append(error_text(chunk))
            raise run.fail(error_text(chunk))
        for line in chunk.get("stream", "").splitlines():
            step = _STEP_RE.match(line)
            if step:
                progress = (int(step.group(1)) - 1) / int(step.group(2))
            run.log("build", line, progress)


def write_context(fileobj: Any, dockerfile: str, wheels: Path | None) -> None:
    """A tar build context: the Dockerfile and, when given, ``wheelhouse/``."""
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
        if wheels is not None:
            for path in sorted(wheels.iterdir()):
                if path.name.endswith(WHEEL_SUFFIXES):
                    tar.add(path, arcname=f"wheelhouse/{path.name}")


def json_lines(text: str | bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a daemon's line-per-entry answer (others skipped)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                yield entry


def error_text(entry: dict[str, Any]) -> str:
    """The message of a daemon stream's error entry."""
    detail = entry.get("errorDetail") or {}
    return str(entry.get("error") or detail.get("message") or entry).strip()
