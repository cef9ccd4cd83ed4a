"""``GET configs``, ``GET configs/<name>``, ``POST configs/<name>/test`` (the Test button)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tornado import web

from ...backends import backend_for
from ...config import ConfigFile, ExecutionConfig
from ...kernelspecs import container_kernel_specs
from ...permissions import Identity, permitted_configs
from .base import DSSAPIHandler, api_error

#: seconds a Test button waits for a daemon or cluster by default, and at most
TEST_TIMEOUT = 10.0
MAX_TEST_TIMEOUT = 60.0


def _target(config: ExecutionConfig, identity: Identity) -> str:
    """Where the config's work runs, in words."""
    from ...summary import where

    return where(config, identity.username)


def resources_summary(config: ExecutionConfig) -> dict[str, Any]:
    """The resources a config gives each kernel or job, with a one-line summary."""
    from ...summary import resources

    return resources(config)


def config_summary(
    config_file: ConfigFile,
    config: ExecutionConfig,
    identity: Identity,
    specs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """A config as the API and the sidebar show it to ``identity``: where and with what it
    runs, its code envs and the kernel specs it gives (``specs``: the caller's)."""
    base = config_file.base_image_of(config)
    return {
        "name": config.name,
        "description": config.description,
        "backend": config.backend,
        "image": config.image,
        "base_image": base.name if base is not None else None,
        "registry": config.registry,
        "target": _target(config, identity),
        "resources": resources_summary(config),
        "code_envs": [
            {"name": e.name, "description": e.description}
            for e in config_file.envs_for(config.name)
        ],
        "kernel_specs": sorted(
            name
            for name, spec in specs.items()
            if spec["metadata"]["dss_containers"]["execution_config"] == config.name
        ),
        "groups": list(config.groups),
    }


async def with_gpus(
    config_file: ConfigFile, config: ExecutionConfig, summary: dict[str, Any]
) -> dict[str, Any]:
    """The summary with ``gpus`` (free/total per host) for a ``docker.gpus: N`` config."""
    from ..gpus import gpus_of

    found = await gpus_of(config_file, config)
    return {**summary, "gpus": found} if found is not None else summary


class ConfigsHandler(DSSAPIHandler):
    @web.authenticated
    async def get(self) -> None:
        config_file, identity = await self.caller()
        specs = container_kernel_specs(config_file, identity, self.config_path)
        permitted = permitted_configs(identity, config_file)
        configs = list(
            await asyncio.gather(
                *(
                    with_gpus(config_file, c, config_summary(config_file, c, identity, specs))
                    for c in permitted
                )
            )
        )
        self.send(
            {
                "user": identity.username,
                "groups": sorted(identity.groups),
                "source": config_file.source,
                "configs": configs,
            }
        )


class ConfigHandler(DSSAPIHandler):
    @web.authenticated
    async def get(self, name: str) -> None:
        config_file, identity = await self.caller()
        config = self.permitted_config(config_file, identity, name)
        specs = container_kernel_specs(config_file, identity, self.config_path)
        summary = config_summary(config_file, config, identity, specs)
        self.send(await with_gpus(config_file, config, summary))


def _check_in_own_loop(config: ExecutionConfig) -> dict[str, str]:
    """Run a backend's check in a worker thread with its own event loop: even a client that
    connects synchronously cannot hold up the server, and the server's timeout holds."""
    return asyncio.run(backend_for(config).check())


class ConfigTestHandler(DSSAPIHandler):
    """The Test button: can this config's daemon or cluster be reached, and what answers?"""

    @web.authenticated
    async def post(self, name: str) -> None:
        body = self.json_body(allowed=("timeout",))
        timeout = body.get("timeout", TEST_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TEST_TIMEOUT
        ):
            raise api_error(
                400, f"timeout: expected seconds, > 0 and <= {MAX_TEST_TIMEOUT:g}, got {timeout!r}"
            )
        config_file, identity = await self.caller()
        config = self.permitted_config(config_file, identity, name)
        target = _target(config, identity)
        started = time.monotonic()
        reply: dict[str, Any] = {"config": config.name, "target": target}
        try:
            info = await asyncio.wait_for(asyncio.to_thread(_check_in_own_loop, config), timeout)
        except asyncio.TimeoutError:
            reply.update(ok=False, error=f"no answer from {target} within {timeout:g} s")
        except Exception as exc:  # a dead daemon is an answer, not a server error
            reply.update(ok=False, error=str(exc) or type(exc).__name__)
        else:
            reply.update(ok=True, **info)
        reply["elapsed_seconds"] = round(time.monotonic() - started, 3)
        self.send(reply)
