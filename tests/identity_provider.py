"""A test identity provider that names several users: token auth, then ``X-Test-User``.

It needs the server's token, like the default provider, and then takes the user name from
an ``X-Test-User`` header, as an authenticating proxy would. Importable by a server in a
subprocess (``tests/`` on its ``PYTHONPATH``):
``--ServerApp.identity_provider_class=identity_provider.HeaderIdentityProvider``.
"""

from __future__ import annotations

from jupyter_server.auth import IdentityProvider, User

HEADER = "X-Test-User"


class HeaderIdentityProvider(IdentityProvider):
    """Token auth as usual, then the user named by ``X-Test-User`` (tests only)."""

    async def get_user(self, handler):
        user = await super().get_user(handler)
        name = handler.request.headers.get(HEADER)
        if user is None or not name:
            return user
        return User(username=name)
