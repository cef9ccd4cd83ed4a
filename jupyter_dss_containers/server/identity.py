"""Who is making a server request: the user name and their groups.

The user comes from jupyter_server's IdentityProvider (``handler.current_user``). The groups
come from JupyterHub when the server runs under a hub and the hub told us (the hub's
identity provider keeps the hub's user model as ``current_user.hub_user``; it has a
``groups`` list when the server's token may read groups), else from the config file's
``groups:`` map. Either way the answer is an :class:`~..permissions.Identity` for the one
permission check of :mod:`..permissions`.
"""

from __future__ import annotations

import os
from typing import Any

from tornado.web import HTTPError

from ..config import ConfigFile
from ..permissions import Identity, identity_for, is_server_owner, process_identity

HUB_ENV_VAR = "JUPYTERHUB_API_URL"


def hub_groups(user: Any) -> list[str] | None:
    """The groups JupyterHub gave for ``user``, or None when the hub did not say."""
    if not os.environ.get(HUB_ENV_VAR):
        return None
    model = getattr(user, "hub_user", None)
    if not isinstance(model, dict):
        return None
    groups = model.get("groups")
    if not isinstance(groups, list | tuple):
        return None  # the token may not read groups: fall back to the config file's map
    return [str(g) for g in groups]


def user_identity(user: Any, config_file: ConfigFile) -> Identity:
    """The identity of a jupyter_server ``User`` (or a bare user name)."""
    username = user if isinstance(user, str) else getattr(user, "username", None)
    if not username:
        raise ValueError(f"cannot tell the user name of {user!r}")
    return identity_for(username, config_file, hub_groups(user))


def request_identity(handler: Any, config_file: ConfigFile) -> Identity:
    """The identity of the user a request handler serves; 403 when nobody is logged in."""
    user = getattr(handler, "current_user", None)
    if not user:
        raise HTTPError(403, "not authenticated")
    if serves_its_owner_only(handler):
        return process_identity(config_file)
    return user_identity(user, config_file)


def call_context_identity(config_file: ConfigFile) -> Identity | None:
    """The identity of the request being served, as jupyter_server's ``CallContext`` knows it.

    ``JupyterHandler.prepare()`` stores the handler in ``CallContext`` (a ContextVar) for
    every request, core routes included. Tornado runs each request in its own asyncio task
    and the kernel managers start kernels in tasks created from it, which copy the context:
    so inside ``POST /api/kernels``, ``POST /api/sessions``, a restart or a kernel spec
    listing, this returns the requester's identity. None outside any request, and under the
    stock identity providers (the process's user, the OS or hub user, is the one served).
    """
    user = _call_context_user()
    return None if user is None else user_identity(user, config_file)


def call_context_username() -> str | None:
    """The user name of the request being served, None where :func:`call_context_identity`
    is None; needs no config file."""
    user = _call_context_user()
    return None if user is None else getattr(user, "username", None) or None


def _call_context_user() -> Any:
    try:
        from jupyter_server import CallContext
    except ImportError:  # jupyter_client used without a server
        return None
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    if handler is None or serves_its_owner_only(handler):
        return None
    try:
        return handler.current_user or None
    except RuntimeError:  # asked before the handler's prepare() resolved the user
        return None


def request_username() -> str | None:
    """The user of the request being served, for the parts that must fail closed (files).

    None for the server's own calls (outside any request), under the stock identity
    providers and for the owner of a JupyterHub single-user server; a request of a
    multi-user server whose user is not known is refused (403) rather than served as the
    server's.
    """
    try:
        from jupyter_server import CallContext
    except ImportError:
        return None
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    if handler is None or serves_its_owner_only(handler):
        return None
    try:
        user = handler.current_user
    except RuntimeError:
        user = None
    name = getattr(user, "username", None) if user else None
    if not name:
        raise HTTPError(403, "not authenticated")
    return None if is_server_owner(name) else name


def is_multi_user(provider: Any) -> bool:
    """True for an identity provider (instance or class) that names several users."""
    from jupyter_server.auth.identity import (
        IdentityProvider,
        LegacyIdentityProvider,
        PasswordIdentityProvider,
    )

    kind = provider if isinstance(provider, type) else type(provider)
    return kind not in (IdentityProvider, PasswordIdentityProvider, LegacyIdentityProvider)


def serves_its_owner_only(handler: Any) -> bool:
    """True for jupyter_server's stock token/password identity providers.

    They call every visitor an anonymous, random user name: whoever holds the token acts as
    the server's owner, whose groups the config file (or the hub) knows by the OS or
    ``JUPYTERHUB_USER`` name. Any other identity provider (JupyterHub's, a site's) names
    real users, and each request then counts as its user's.
    """
    return not is_multi_user(getattr(handler, "identity_provider", None))
