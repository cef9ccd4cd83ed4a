"""Registries: where a config's images are pushed after a build, and pulled from.

A config with ``registry: host[:port][/path]`` runs ``<registry>/<local reference>``;
a build tags the local image with that name and pushes it, a remote daemon (or a
Kubernetes node) pulls it. Pushes and pulls go through the docker SDK's streams, whose
error entries become :class:`RegistryError`; a push reports the manifest digest, a pull
can be checked against one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

StatusSink = Callable[[str], None]


class RegistryError(RuntimeError):
    """A push or pull failed; the message names the image, the registry and the reason."""


@dataclass(frozen=True)
class PushResult:
    """Where an image went and the digest the registry gave its manifest."""

    ref: str
    digest: str

    @property
    def pinned(self) -> str:
        """``repository@sha256:...``: the reference no later push can change."""
        return f"{split_ref(self.ref)[0]}@{self.digest}"


def qualified(registry: str | None, local_ref: str) -> str:
    """The name an image has in a config's registry (the local name when there is none)."""
    if not registry:
        return local_ref
    return f"{registry.strip().rstrip('/')}/{local_ref}"


def split_ref(ref: str) -> tuple[str, str]:
    """``host:5000/a/b:tag`` -> (``host:5000/a/b``, ``tag``); the tag defaults to latest."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def push_image(
    client: docker.DockerClient,
    local_ref: str,
    registry: str,
    on_status: StatusSink | None = None,
) -> PushResult:
    """Tag ``local_ref`` into ``registry`` and push it; the registry tag goes on failure."""
    remote = qualified(registry, local_ref)
    repository, tag = split_ref(remote)
    client.api.tag(local_ref, repository, tag, force=True)
    try:
        stream = client.api.push(repository, tag=tag, stream=True, decode=True)
        digest = _follow(stream, f"pushing {remote}", on_status)
    except docker.errors.APIError as exc:
        _untag(client, remote)
        raise RegistryError(f"pushing {remote}: {exc.explanation or exc}") from None
    except RegistryError:
        _untag(client, remote)
        raise
    if not digest:
        _untag(client, remote)
        raise RegistryError(f"pushing {remote}: the registry reported no digest")
    return PushResult(remote, digest)


def pull_image(
    client: docker.DockerClient,
    ref: str,
    expected_digest: str | None = None,
    on_status: StatusSink | None = None,
) -> str:
    """Pull ``ref``; return its manifest digest, refusing one that differs from expected."""
    repository, tag = split_ref(ref)
    try:
        stream = client.api.pull(repository, tag=tag, stream=True, decode=True)
        _follow(stream, f"pulling {ref}", on_status)
    except docker.errors.APIError as exc:
        raise RegistryError(f"pulling {ref}: {exc.explanation or exc}") from None
    digests = client.api.inspect_image(ref).get("RepoDigests") or []
    found = [d.split("@", 1)[1] for d in digests if d.split("@", 1)[0] == repository]
    if expected_digest is not None and expected_digest not in found:
        raise RegistryError(
            f"pulling {ref}: digest {', '.join(found) or 'none'} != expected {expected_digest}"
        )
    if not found:
        raise RegistryError(f"pulling {ref}: the daemon recorded no digest for {repository}")
    return expected_digest or found[0]


def _follow(stream: Iterable[dict[str, Any]], doing: str, on_status: StatusSink | None) -> str:
    """Read a push/pull stream to its end: errors raise, the last digest is returned."""
    digest = ""
    for entry in stream:
        if "error" in entry or "errorDetail" in entry:
            detail = entry.get("errorDetail") or {}
            reason = entry.get("error") or detail.get("message") or entry
            raise RegistryError(f"{doing}: {str(reason).strip()}")
        aux = entry.get("aux") or {}
        if aux.get("Digest"):
            digest = aux["Digest"]
        status = entry.get("status", "")
        if status.startswith("Digest: "):
            digest = status.split()[1]
        if on_status is not None and status and not entry.get("progressDetail"):
            layer = entry.get("id")
            on_status(f"{layer}: {status}" if layer else status)
    return digest


def _untag(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.api.remove_image(ref, noprune=True)
