"""Where ``cleanup`` and the server's start-up reaper look for orphans.

A config's backend lists one place: its daemon, or on Kubernetes the namespace of this
process's user. With ``namespace: dss-${user}`` a server (a shared one, or a single-user
server whose user's jobs ran elsewhere before) leaves pods in other users' namespaces
too, so the reaper also looks in every namespace the template expands to for the users
the server has seen (the file's ``groups:`` map, the owners of its stored jobs, its own
user) and in those the backend created (found only where the RBAC lets the server list
namespaces: a Role limited to named namespaces works, looking in the users' ones only).
The namespace rules are the launcher's (:mod:`.launcherd.namespaces`), reused as they are.
A server behind a trusted launcher leaves this to the launcher.
"""

from __future__ import annotations

from collections.abc import Iterable

from .backends import backend_for, local_backend_for
from .backends.base import Backend
from .config import ConfigFile, ExecutionConfig


async def reaping_backends(config: ExecutionConfig, users: Iterable[str] = ()) -> list[Backend]:
    """The config's backend, or one per namespace of the users (and found) on its cluster."""
    from .backends.remote import RemoteBackend
    from .launcherd.namespaces import managed_namespaces, per_user, users_namespaces

    backend = backend_for(config)
    if isinstance(backend, RemoteBackend) or not per_user(config):
        return [backend]
    namespaces = await managed_namespaces(config) | users_namespaces(config, users)
    namespaces.discard(backend.namespace)  # type: ignore[attr-defined]
    backends = [backend]
    for namespace in sorted(namespaces):
        other = local_backend_for(config)
        other.namespace = namespace  # type: ignore[attr-defined]
        backends.append(other)
    return backends


def users_seen(config_file: ConfigFile | None, also: Iterable[str] = ()) -> set[str]:
    """The users a server knows by name: the file's ``groups:`` map and ``also``."""
    users = set(config_file.groups) if config_file is not None else set()
    return {u for u in users | set(also) if u}
