"""What the launcher asks JupyterHub with its own service token: a user's groups and servers.

The caller's token only says *who* calls (checked by jupyterhub's ``HubAuth``); groups
and live servers are read here with the launcher's token (scopes ``read:users:groups``
and ``read:servers``), so nothing a request carries can widen what its user may do.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..backends.base import BackendUnavailable


@dataclass(frozen=True)
class HubUser:
    """A hub user as the launcher's token sees it."""

    name: str
    groups: frozenset[str]
    #: start times (epoch seconds) of the user's live servers (running or starting)
    live_servers: tuple[float, ...]

    @property
    def latest_start(self) -> float | None:
        return max(self.live_servers) if self.live_servers else None


def parse_user(model: dict[str, Any]) -> HubUser:
    """The groups and live servers of a hub user model (``GET /hub/api/users/<name>``)."""
    starts = []
    for server in (model.get("servers") or {}).values():
        if not isinstance(server, dict) or server.get("pending") == "stop":
            continue
        if not (server.get("ready") or server.get("pending") == "spawn"):
            continue
        starts.append(_epoch(server.get("started")))
    return HubUser(
        name=str(model.get("name", "")),
        groups=frozenset(str(g) for g in model.get("groups") or ()),
        live_servers=tuple(starts),
    )


def _epoch(stamp: Any) -> float:
    """Seconds since the epoch of the hub's ISO 8601 time; now when it gives none yet
    (a server still starting): a workload created meanwhile belongs to it."""
    if not isinstance(stamp, str) or not stamp:
        return time.time()
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class HubClient:
    """The hub's REST API with the launcher's own token; short-lived answers are cached."""

    def __init__(self, api_url: str, token: str, cache_seconds: float = 5.0):
        self.api_url = api_url.rstrip("/") + "/"
        self.token = token
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, HubUser | None]] = {}

    async def user(self, name: str, fresh: bool = False) -> HubUser | None:
        """The user's groups and live servers; None when the hub has no such user."""
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached and not fresh and now - cached[0] < self.cache_seconds:
            return cached[1]
        status, body = await self._get(f"users/{quote(name, safe='')}")
        if status == 404:
            user = None
        elif status == 200 and isinstance(body, dict):
            user = parse_user(body)
        else:
            raise BackendUnavailable(
                f"JupyterHub at {self.api_url} answered {status} for user {name!r}: "
                f"{_message(body)} (the launcher's token needs read:users:groups, read:servers)"
            )
        self._cache[name] = (now, user)
        if len(self._cache) > 10000:
            self._cache.clear()
        return user

    async def _get(self, path: str) -> tuple[int, Any]:
        client = AsyncHTTPClient(force_instance=True)
        try:
            response = await client.fetch(
                HTTPRequest(
                    self.api_url + path,
                    headers={"Authorization": f"token {self.token}"},
                    connect_timeout=5,
                    request_timeout=15,
                ),
                raise_error=False,
            )
        except OSError as exc:
            raise BackendUnavailable(
                f"JupyterHub at {self.api_url} is unreachable: {exc}"
            ) from None
        finally:
            client.close()
        if response.code == 599:
            raise BackendUnavailable(
                f"JupyterHub at {self.api_url} is unreachable: {response.error}"
            )
        try:
            return response.code, json.loads(response.body or b"null")
        except ValueError:
            return response.code, None


def _message(body: Any) -> str:
    return str(body.get("message")) if isinstance(body, dict) else "no details"
