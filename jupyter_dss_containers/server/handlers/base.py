"""What every route of the REST API shares: config file, caller, JSON in and out, errors.

The API lives under ``<base_url>/dss-containers/api/`` (described in
``schema/openapi.yaml``). Every route is authenticated like every Jupyter API (403 without
a user, XSRF rules for cookie-authenticated writes), answers JSON, and says why when it
refuses: 400 for a bad body, 403 naming the config and who may use it, 404 for an unknown
config, 503 when the config file cannot be used. Docker and Kubernetes calls run off the
event loop and under short timeouts (:func:`bounded`), so a dead daemon gives an answer,
never a hung request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from jupyter_server.base.handlers import APIHandler
from tornado.web import HTTPError

from ...config import ConfigError, ConfigFile, ExecutionConfig, load_config
from ...permissions import (
    Identity,
    PermissionDenied,
    check_permission,
    permitted_configs,
    request_identity,
)
from ..identity import request_identity as identity_of_request
from ..limits import BadInput, parse_json, whole_number

T = TypeVar("T")

API_PREFIX = "dss-containers/api"
#: query arguments that are whole numbers wherever a route takes them
WHOLE_NUMBER_ARGUMENTS = ("tail", "since")


def api_error(status: int, message: str) -> HTTPError:
    """An HTTPError whose JSON body carries ``message`` verbatim (``%`` is safe in it)."""
    return HTTPError(status, "%s", message)


class DSSAPIHandler(APIHandler):
    """What every route shares: the config file, the caller's identity, JSON in and out."""

    @property
    def config_path(self) -> str | None:
        extension = self.settings.get("dss_containers")
        return getattr(extension, "config_file", None)

    async def load_config_file(self) -> ConfigFile:
        """The config file (read again once edited: edits apply without a restart; read in a
        thread, the event loop never waits on the disk); 503 when unusable."""
        try:
            return await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            raise api_error(503, str(exc)) from None

    async def caller(self) -> tuple[ConfigFile, Identity]:
        """The config file and who is asking; the identity also holds for this request's
        kernel and job starts (``permissions.request_identity``)."""
        config_file = await self.load_config_file()
        identity = identity_of_request(self, config_file)
        # Each tornado request runs in its own asyncio task: this never leaks to another.
        request_identity.set(identity)
        return config_file, identity

    def permitted_config(
        self, config_file: ConfigFile, identity: Identity, name: str
    ) -> ExecutionConfig:
        """The named config if the caller may use it: 404 if unknown, 403 if forbidden."""
        config = config_file.execution_configs.get(name)
        if config is None:
            yours = ", ".join(c.name for c in permitted_configs(identity, config_file)) or "none"
            raise api_error(
                404,
                f"no execution configuration named {name!r} in {config_file.source} "
                f"(yours: {yours})",
            )
        try:
            check_permission(identity, config)
        except PermissionDenied as exc:
            raise api_error(403, str(exc)) from None
        return config

    async def prepare(self) -> None:
        """Whole-number query arguments are checked on every route, before it runs."""
        await super().prepare()
        if not self.current_user:
            return  # the route's own @authenticated answers
        for name in WHOLE_NUMBER_ARGUMENTS:
            for value in self.get_query_arguments(name):
                try:
                    whole_number(value, name)
                except BadInput as exc:
                    raise api_error(400, str(exc)) from None

    def json_body(self, allowed: tuple[str, ...] = ()) -> dict[str, Any]:
        """The request body as a JSON object (empty when there is none); 400 when it is not
        (413 over the size limit), decided before parsing where it can be."""
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            data = parse_json(raw)
        except BadInput as exc:
            raise api_error(exc.status, str(exc)) from None
        if not isinstance(data, dict):
            raise api_error(
                400, f"expected a JSON object in the request body, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            expected = ", ".join(allowed) or "no keys"
            raise api_error(
                400, f"unknown key(s) {', '.join(map(repr, unknown))} (expected: {expected})"
            )
        return data

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"message": ..., "reason": ...}`` like every Jupyter API, never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        reply: dict[str, Any] = {"message": self._reason, "reason": self._reason}
        if isinstance(exc, HTTPError):
            if exc.log_message:
                try:
                    reply["message"] = exc.log_message % exc.args if exc.args else exc.log_message
                except (TypeError, ValueError):
                    reply["message"] = exc.log_message
        elif exc is not None:
            reply["message"] = "Unhandled error"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply))


async def bounded(coro: Awaitable[T], timeout: float) -> tuple[T | None, str | None]:
    """(result, None) or (None, why): a slow or dead daemon never hangs a listing."""
    try:
        return await asyncio.wait_for(coro, timeout), None
    except asyncio.TimeoutError:
        return None, f"no answer within {timeout:g} s"
    except Exception as exc:
        return None, str(exc) or type(exc).__name__
