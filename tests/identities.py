"""An identity provider that names several users, for server subprocesses in tests.

Token auth as usual (the server's token is still required), then the user named by the
``X-Test-User`` header, as an authenticating proxy would say. Importable by a server
started with ``tests/`` on its PYTHONPATH:
``--ServerApp.identity_provider_class=identities.HeaderIdentityProvider``. Imports nothing
from the tests (no conftest side effects in the server).
"""

from __future__ import annotations

from jupyter_server.auth import IdentityProvider, User


class HeaderIdentityProvider(IdentityProvider):
    """The ``X-Test-User`` header names the user of a token-authenticated request."""

    async def get_user(self, handler):
        user = await super().get_user(handler)
        name = handler.request.headers.get("X-Test-User")
        if user is None or not name:
            return user
        return User(username=name)
