"""Bearer-token authentication, as an API server started with ``--token-auth-file`` and
``--anonymous-auth=false`` does it: a request without a token the cluster knows gets 401
``Unauthorized`` (the real server's Status), before RBAC, faults or any route."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiohttp import web

from .podoutput import status

#: the token ``write_kubeconfig`` writes; a cluster accepts it unless told otherwise
DEFAULT_TOKEN = "fake-token"


def bearer_of(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authenticator(tokens: Collection[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware refusing every request whose bearer token is not one of ``tokens`` (read
    at each request: a test may add or revoke one)."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        token = bearer_of(request)
        if token is None or not any(hmac.compare_digest(token, t) for t in tokens):
            return status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    return authenticate
