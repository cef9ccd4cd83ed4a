"""Who the user is, which groups they are in, and the one check "may user U use config C".

The REST API, the provisioner and the job service all call :func:`check_permission`;
nothing else decides access, so a config cannot be reached by naming it somewhere else.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from .config import ConfigFile, ExecutionConfig, Permission
from .errors import ReportedError

EVERYONE = "*"


@dataclass(frozen=True)
class Identity:
    """A user name and the groups it belongs to, whatever told us so."""

    username: str
    groups: frozenset[str] = frozenset()


class PermissionDenied(ReportedError, PermissionError):
    """A user named a config their groups are not permitted to use."""

    status = 403


def identity_for(
    username: str, config_file: ConfigFile, hub_groups: list[str] | None = None
) -> Identity:
    """Groups from JupyterHub when it told us, else from the config file's ``groups:`` map."""
    groups = hub_groups if hub_groups is not None else config_file.groups.get(username, ())
    return Identity(username, frozenset(groups))


def process_identity(config_file: ConfigFile) -> Identity:
    """The user this process acts for: the hub user of a single-user server, else the OS user.

    Used where no request names a user (a kernel started by nbclient, papermill or
    ``jupyter console``); the server extension passes the request's identity instead.
    """
    username = os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    return identity_for(username, config_file)


#: The identity of the request being served; the server extension sets it around kernel and
#: job starts so the provisioner checks the requesting user, not the server's owner.
request_identity: ContextVar[Identity | None] = ContextVar("request_identity", default=None)


#: Functions that may know who the current request is from (the server extension registers
#: one reading jupyter_server's CallContext), so permissions need not import the server.
IdentityResolver = Callable[[ConfigFile], "Identity | None"]
_resolvers: list[IdentityResolver] = []


def register_identity_resolver(resolver: IdentityResolver) -> None:
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def serving_identity(config_file: ConfigFile) -> Identity | None:
    """The identity of the request being served, None outside requests of a server whose
    identity provider names several users (the process's user is then the one served)."""
    identity = request_identity.get()
    for resolver in _resolvers:
        if identity is not None:
            break
        identity = resolver(config_file)
    return identity


def current_identity(config_file: ConfigFile) -> Identity:
    """The request's identity when a server request is being served, else the process's."""
    return serving_identity(config_file) or process_identity(config_file)


#: what a permission is given for: an execution config, or one of the server's shared
#: parts (``config.Permission``: host kernels, terminals); both have ``groups`` and ``users``
Grant = ExecutionConfig | Permission


def is_permitted(identity: Identity, config: Grant) -> bool:
    if EVERYONE in config.groups or identity.username in config.users:
        return True
    return bool(identity.groups.intersection(config.groups))


def check_permission(identity: Identity, config: Grant) -> None:
    """Raise :class:`PermissionDenied` naming the config (or shared part) and who may use it."""
    if is_permitted(identity, config):
        return
    allowed = [f"groups {', '.join(config.groups)}"] if config.groups else []
    if config.users:
        allowed.append(f"users {', '.join(config.users)}")
    mine = ", ".join(sorted(identity.groups)) or "no groups"
    if isinstance(config, Permission):
        what, them = config.label, "they are"
    else:
        what, them = f"execution configuration {config.name!r}", "it is"
    raise PermissionDenied(
        f"user {identity.username!r} may not use {what}: "
        f"{them} open to {' and '.join(allowed) or 'nobody'} ({identity.username} is in {mine})"
    )


def is_server_owner(username: str | None) -> bool:
    """True for the user a JupyterHub single-user server runs for (``$JUPYTERHUB_USER``).

    Their server is their own process, with their own files: on it they keep host kernels,
    terminals and the whole root, as on any single-user server. Anyone else the hub lets in
    is a guest, held to the multi-user rules.
    """
    owner = os.environ.get("JUPYTERHUB_USER")
    return bool(owner) and username == owner


def check_shared_part(identity: Identity, part: Permission) -> None:
    """May ``identity`` use one of the server's shared parts (host kernels, terminals)?
    The server's owner may; anyone else needs the config file's permission for it."""
    if not is_server_owner(identity.username):
        check_permission(identity, part)


def permitted_configs(identity: Identity, config_file: ConfigFile) -> list[ExecutionConfig]:
    return [c for c in config_file.execution_configs.values() if is_permitted(identity, c)]
