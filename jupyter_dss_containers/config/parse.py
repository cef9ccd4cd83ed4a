"""A parsed document (file, API payload or embedded default) validated and built into the
model; every error names the source, the path inside it and what was expected."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from .checks import cross_check
from .defaults import EMBEDDED_DEFAULT
from .errors import ConfigError
from .messages import dotted, explain, kind_of, leaf_errors
from .model import SHARED_PARTS, BaseImageSpec, CodeEnvSpec, ConfigFile, ExecutionConfig, Permission


@cache
def config_schema() -> dict[str, Any]:
    text = resources.files("jupyter_dss_containers.schema").joinpath("config.schema.json")
    return json.loads(text.read_text())


def parse_config(data: Any, source: str) -> ConfigFile:
    """Validate a parsed document (file, API payload or embedded default) and build it."""
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top, got {kind_of(data)}")])
    validator = jsonschema.Draft202012Validator(config_schema())
    problems = sorted(
        {(dotted(e.absolute_path), explain(e)) for e in leaf_errors(validator.iter_errors(data))}
    )
    if problems:
        raise ConfigError(source, problems)
    # The embedded base image 'default' is always there unless the file redefines it.
    data = {
        **data,
        "base_images": {**EMBEDDED_DEFAULT["base_images"], **data.get("base_images", {})},
    }
    problems = cross_check(data)
    if problems:
        raise ConfigError(source, problems)
    defaults = data.get("defaults", {})
    return ConfigFile(
        source=source,
        execution_configs={
            n: ExecutionConfig.from_dict(n, _gpu_default(c, data["base_images"]), defaults)
            for n, c in data.get("execution_configs", {}).items()
        },
        base_images={
            n: BaseImageSpec.from_dict(n, b, defaults)
            for n, b in data.get("base_images", {}).items()
        },
        code_envs={
            n: CodeEnvSpec.from_dict(n, e, source) for n, e in data.get("code_envs", {}).items()
        },
        groups={u: tuple(g) for u, g in data.get("groups", {}).items()},
        defaults=defaults,
        **{
            key: Permission.from_dict(key, label, data.get(key))
            for key, label in SHARED_PARTS.items()
        },
    )


def _gpu_default(config: dict[str, Any], base_images: dict[str, Any]) -> dict[str, Any]:
    """A Docker config on a ``with_cuda`` base image gets every GPU unless it sets ``gpus``."""
    docker = config.get("docker", {})
    cuda = (base_images.get(config["image"]) or {}).get("with_cuda", False)
    if config["backend"] != "docker" or not cuda or "gpus" in docker:
        return config
    return {**config, "docker": {**docker, "gpus": "all"}}
