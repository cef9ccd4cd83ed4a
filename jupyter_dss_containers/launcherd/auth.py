"""Who calls the launcher: a JupyterHub token checked by the hub, or a shared secret.

Under a hub, the token in ``Authorization: token ...`` (a single-user server's
``JUPYTERHUB_API_TOKEN``, or the user's own) is checked by jupyterhub's own ``HubAuth``;
it must be a user's and carry ``access:services!service=<launcher>``; the user's groups
and live servers are then read with the launcher's own token (:mod:`.hub`). Without a hub,
one trusted server holds a shared secret and names the user it acts for.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from ..config import ConfigFile
from .hub import HubClient
from .policy import Caller, Refused
from .wire import USER_HEADER


class Unauthenticated(Refused):
    def __init__(self, message: str, status: int = 401):
        super().__init__(message, status)


class Authenticator(Protocol):
    async def caller(self, headers: Any, config_file: ConfigFile) -> Caller: ...


def _credential(headers: Any) -> str:
    value = headers.get("Authorization", "")
    scheme, _, credential = value.partition(" ")
    if scheme.lower() not in ("token", "bearer") or not credential.strip():
        raise Unauthenticated(
            "no credentials: send 'Authorization: token <JupyterHub API token>' "
            "(or 'Bearer <shared secret>' to a launcher without a hub)"
        )
    return credential.strip()


class HubAuthenticator:
    """Tokens checked by JupyterHub; groups and servers from the launcher's own token."""

    def __init__(self, hub: HubClient, service_name: str, token_cache_seconds: int = 10):
        from jupyterhub.services.auth import HubAuth

        self.hub = hub
        self.service_name = service_name
        self.auth = HubAuth(
            api_token=hub.token,
            api_url=hub.api_url.rstrip("/"),
            cache_max_age=token_cache_seconds,
            access_scopes={f"access:services!service={service_name}", "access:services"},
        )

    async def caller(self, headers: Any, config_file: ConfigFile) -> Caller:
        token = _credential(headers)
        try:
            model = await self.auth.user_for_token(token, sync=False)
        except Exception as exc:  # HubAuth raises tornado HTTPErrors for hub failures
            raise Refused(f"JupyterHub could not check the token: {exc}", 503) from None
        if not model:
            raise Unauthenticated("invalid or expired token", 403)
        if model.get("kind", "user") != "user":
            raise Unauthenticated("only users' tokens may use the launcher", 403)
        if not self.auth.check_scopes(self.auth.access_scopes, model):
            raise Unauthenticated(
                f"this token may not use the launcher: it lacks the scope "
                f"access:services!service={self.service_name}",
                403,
            )
        name = model["name"]
        user = await self.hub.user(name)
        if user is None:  # deleted between the two calls
            raise Unauthenticated("invalid or expired token", 403)
        return Caller(name, user.groups, hub_started=user.latest_start)


class SecretAuthenticator:
    """One trusted server that holds a secret; it names the user it acts for (or none)."""

    def __init__(self, secret: str):
        if len(secret) < 16:
            raise ValueError("the launcher's shared secret must have at least 16 characters")
        self.secret = secret.encode()

    async def caller(self, headers: Any, config_file: ConfigFile) -> Caller:
        credential = _credential(headers).encode()
        if not hmac.compare_digest(credential, self.secret):
            raise Unauthenticated("invalid credentials", 403)
        user = headers.get(USER_HEADER)
        if not user:
            return Caller(None, trusted_server=True)
        groups = config_file.groups.get(user, ())
        return Caller(user, frozenset(groups))
