"""Which of jupyter_server's shared parts a user of a multi-user server may reach.

Every core route asks the server's ``Authorizer`` before it acts (terminals and their
websocket, language servers, server shutdown, config writes, contents, sessions,
kernels). :class:`SharedPartsAuthorizer` wraps whatever authorizer the site has: the site's
answer still counts, and on a multi-user server ours is added on top of it:

- terminals need the config file's ``terminals`` permission, language servers (host
  processes, like host kernels) its ``host_kernels`` permission;
- stopping the server (``POST /api/shutdown``) and writing the server-wide frontend config
  (``/api/config``) are the administrator's, never a user's;
- before a contents, session or kernel request is served, the user's root folder exists.

:func:`unsafe_parts` lists what the extension cannot make per user (a site's own kernel,
session or contents manager, a gateway): the server then refuses to start, saying so.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.authorizer import Authorizer
from traitlets import Any as AnyTrait
from traitlets import Instance

from ..config import ConfigError, load_config
from ..permissions import PermissionDenied, check_shared_part, is_server_owner
from .identity import serves_its_owner_only, user_identity

#: resource -> the config file's permission key that opens it
GATED = {"terminals": "terminals", "lsp": "host_kernels"}
#: (resource, action) no user of a multi-user server may do
ADMIN_ONLY = {("server", "write"), ("config", "write")}
#: resources whose requests read or write the user's files
USES_FILES = {"contents", "sessions", "kernels", "nbconvert"}


class SharedPartsAuthorizer(Authorizer):
    """The site's authorizer, plus the per-user rules above on a multi-user server."""

    inner = Instance(Authorizer, help="The authorizer the server had (its answer counts too).")
    extension = AnyTrait(help="The DSSContainersExtension (config file, contents manager).")

    async def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if not await ensure_async(self.inner.is_authorized(handler, user, action, resource)):
            return False
        if serves_its_owner_only(handler):
            return True
        try:
            return await self._may(handler, user, action, resource)
        except PermissionDenied as exc:
            if _asks_what_is_allowed(handler):
                return False  # /api/me lists permissions: a refusal there is an answer
            self.log.info("dss-containers: refused %s on %s: %s", action, resource, exc)
            raise

    async def _may(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if is_server_owner(getattr(user, "username", None)):
            return True  # a hub user's own server: theirs, as a single-user server is
        if (resource, action) in ADMIN_ONLY:
            raise PermissionDenied(
                f"{action} on {resource} is for the server's administrator, not for the "
                "users of a multi-user server"
            )
        key = GATED.get(resource)
        if key is not None:
            config_file = await self._config_file()
            check_shared_part(user_identity(user, config_file), getattr(config_file, key))
        elif resource in USES_FILES:
            await self._ensure_root(user)
        return True

    async def _config_file(self) -> Any:
        path = getattr(self.extension, "config_file", None)
        try:
            return await asyncio.to_thread(load_config, path)
        except ConfigError as exc:  # fail closed: nobody gets what the file would decide
            raise PermissionDenied(f"the config file cannot be used: {exc}") from None

    async def _ensure_root(self, user: Any) -> None:
        from .contents import UserContentsManager

        contents = getattr(self.extension.serverapp, "contents_manager", None)
        name = getattr(user, "username", None)
        if isinstance(contents, UserContentsManager) and name:
            await asyncio.to_thread(contents.ensure_root, name)


def _asks_what_is_allowed(handler: Any) -> bool:
    from jupyter_server.services.api.handlers import IdentityHandler

    return isinstance(handler, IdentityHandler)


def unsafe_parts(serverapp: Any) -> list[str]:
    """What of a multi-user server this extension cannot make per user, in words."""
    from .contents import UserContentsManager
    from .kernels import OwnedKernelManager, OwnedSessionManager

    problems = []
    for what, manager, ours in (
        ("kernel manager", serverapp.kernel_manager, OwnedKernelManager),
        ("session manager", serverapp.session_manager, OwnedSessionManager),
        ("contents manager", serverapp.contents_manager, UserContentsManager),
    ):
        if not isinstance(manager, ours):
            kind = type(manager)
            problems.append(
                f"the {what} {kind.__module__}.{kind.__qualname__} is shared by all users "
                f"(expected {ours.__module__}.{ours.__qualname__} or a subclass)"
            )
    gateway = getattr(serverapp, "gateway_config", None)
    if gateway is not None and getattr(gateway, "gateway_enabled", False):
        problems.append("a kernel gateway serves every user's kernels alike")
    return problems
