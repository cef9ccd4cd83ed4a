"""``GET|POST services``, ``GET|DELETE services/<name>``, ``POST services/<name>/versions``,
``POST services/<name>/keys``, ``GET services/<name>/logs``: the caller's own services.

The model arrives as bytes (base64) serialised by the caller's kernel; the server never
unpickles it: it goes into the service's volume as is and is loaded in the serving
containers only. A service is another user's or missing alike: 404 with one text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from tornado import web

from ...config import ConfigFile, ExecutionConfig
from ...services import engine, spec
from ...services.engine import docker_configs, find_config
from ..limits import BadInput, parse_json
from .base import DSSAPIHandler, api_error, bounded

#: a request carrying a model may be this large (base64 included)
MAX_MODEL_BODY = 64 * 1024**2
MAX_META = 64 * 1024
WATCH_SECONDS = 5.0


def model_of(body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """(model bytes, meta) from a body, checked as data: nothing is unpickled here."""
    text = body.get("model")
    if not isinstance(text, str) or not text:
        raise api_error(400, "'model' must be the serialised model, base64")
    try:
        model = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise api_error(400, "'model' is not valid base64") from None
    meta = body.get("meta", {})
    if not isinstance(meta, dict) or len(json.dumps(meta)) > MAX_META:
        raise api_error(400, f"'meta' must be an object of at most {MAX_META} bytes as JSON")
    return model, meta


class _ServiceRoute(DSSAPIHandler):
    def body_of(self, allowed: tuple[str, ...]) -> dict[str, Any]:
        raw = self.request.body
        if not raw or not raw.strip():
            return {}
        try:
            data = parse_json(raw, max_bytes=MAX_MODEL_BODY)
        except BadInput as exc:
            raise api_error(exc.status, str(exc)) from None
        if not isinstance(data, dict):
            raise api_error(400, "expected a JSON object in the request body")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise api_error(
                400,
                f"unknown key(s) {', '.join(map(repr, unknown))} (expected: {', '.join(allowed)})",
            )
        return data

    async def run(self, fn: Any, *args: Any) -> Any:
        """A Docker call off the event loop; our refusals keep their status."""
        try:
            return await asyncio.to_thread(fn, *args)
        except engine.ServiceError as exc:
            raise api_error(exc.status, str(exc)) from None
        except spec.SpecError as exc:
            raise api_error(400, str(exc)) from None
        except Exception as exc:
            raise api_error(503, f"the Docker daemon failed: {exc}") from None

    async def located(self, name: str) -> tuple[ConfigFile, Any, ExecutionConfig]:
        config_file, identity = await self.caller()
        config = await self.run(find_config, config_file, identity.username, name)
        return config_file, identity, config


class ServicesHandler(_ServiceRoute):
    @web.authenticated
    async def get(self) -> None:
        config_file, identity = await self.caller()
        found: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        for config in docker_configs(config_file):  # a dead daemon answers within the bound
            rows, why = await bounded(asyncio.to_thread(engine.rows, config, identity.username), 20)
            found += rows or []
            if why is not None:
                skipped[config.name] = why
        self.send({"services": found, "skipped": skipped})

    @web.authenticated
    async def post(self) -> None:
        """Deploy: 201 with the service and its first API key (shown this once)."""
        from ...images import resolve_image

        config_file, identity = await self.caller()
        body = self.body_of(("name", "config", "version", "replicas", "model", "meta", "code_env"))
        try:
            name = spec.check_name(body.get("name"))
            version = spec.check_version(body.get("version", "v1"))
            replicas = spec.check_replicas(body.get("replicas", 1))
        except spec.SpecError as exc:
            raise api_error(400, str(exc)) from None
        if not isinstance(body.get("config"), str):
            raise api_error(400, "'config' must be the name of an execution configuration")
        config = self.permitted_config(config_file, identity, body["config"])
        if config.backend != "docker":
            raise api_error(
                400, f"config {config.name!r}: services run on Docker configs only so far"
            )
        model, meta = model_of(body)
        image = await self.run(resolve_image, config_file, config, body.get("code_env"))
        row, key = await self.run(
            engine.deploy, config, image, identity.username, name, version, replicas, model, meta
        )
        self.send({**row, "api_key": key}, status=201)


class ServiceHandler(_ServiceRoute):
    @web.authenticated
    async def get(self, name: str) -> None:
        _, identity, config = await self.located(name)
        self.send(await self.run(engine.describe, config, identity.username, name))

    @web.authenticated
    async def delete(self, name: str) -> None:
        _, identity, config = await self.located(name)
        await self.run(engine.remove, config, identity.username, name)
        self.send({"name": name, "removed": True})


class ServiceVersionsHandler(_ServiceRoute):
    @web.authenticated
    async def post(self, name: str) -> None:
        """A new version (with ``model``), ready before it gets traffic; or, without a
        model, new ``traffic`` weights (a rollback)."""
        from ...images import resolve_image

        config_file, identity, config = await self.located(name)
        body = self.body_of(("version", "replicas", "model", "meta", "traffic", "code_env"))
        if "model" not in body:
            if "traffic" not in body:
                raise api_error(400, "send a 'model' (a new version) or 'traffic' weights")
            self.send(
                await self.run(engine.set_traffic, config, identity.username, name, body["traffic"])
            )
            return
        self.permitted_config(config_file, identity, config.name)  # may still deploy there
        try:
            version = spec.check_version(body.get("version"))
            replicas = spec.check_replicas(body.get("replicas", 1))
        except spec.SpecError as exc:
            raise api_error(400, str(exc)) from None
        model, meta = model_of(body)
        image = await self.run(resolve_image, config_file, config, body.get("code_env"))
        row = await self.run(
            engine.add_version,
            config,
            image,
            identity.username,
            name,
            version,
            replicas,
            model,
            meta,
            body.get("traffic"),
        )
        self.send(row, status=201)


class ServiceVersionHandler(_ServiceRoute):
    @web.authenticated
    async def delete(self, name: str, version: str) -> None:
        """Remove a version without traffic (409 while it has some)."""
        _, identity, config = await self.located(name)
        self.send(await self.run(engine.remove_version, config, identity.username, name, version))


class ServiceKeysHandler(_ServiceRoute):
    @web.authenticated
    async def get(self, name: str) -> None:
        """The keys by id; no key itself is kept anywhere."""
        _, identity, config = await self.located(name)
        self.send(
            {"name": name, "keys": await self.run(engine.keys, config, identity.username, name)}
        )

    @web.authenticated
    async def post(self, name: str) -> None:
        """Another API key (shown once; the router keeps its hash only)."""
        _, identity, config = await self.located(name)
        key = await self.run(engine.new_key, config, identity.username, name)
        self.send({"name": name, "api_key": key}, status=201)


class ServiceKeyHandler(_ServiceRoute):
    @web.authenticated
    async def delete(self, name: str, key_id: str) -> None:
        """Revoke a key: the router refuses it from its next request on."""
        _, identity, config = await self.located(name)
        await self.run(engine.revoke_key, config, identity.username, name, key_id)
        self.send({"name": name, "revoked": key_id})


class ServiceLogsHandler(_ServiceRoute):
    @web.authenticated
    async def get(self, name: str) -> None:
        _, identity, config = await self.located(name)
        tail = int(self.get_query_argument("tail", "100"))
        self.send(
            {
                "name": name,
                "logs": await self.run(
                    engine.logs, config, identity.username, name, min(tail, 5000)
                ),
            }
        )


async def watch(config_path: str | None, log: Any) -> None:
    """Forever: create again the replicas of the daemons' services that are gone or
    stopped (``docker kill`` and ``docker rm`` are not undone by a restart policy)."""
    from ...config import load_config

    while True:
        await asyncio.sleep(WATCH_SECONDS)
        try:
            config_file = await asyncio.to_thread(load_config, config_path)
            for config in docker_configs(config_file):
                replaced = await asyncio.to_thread(
                    engine.reconcile, config, config_file.execution_configs
                )
                for name in replaced:
                    log.info("dss-containers: replaced service replica %s", name)
        except Exception as exc:  # a dead daemon or a broken file: try again later
            log.debug("dss-containers: service watch: %s", exc)
