"""Which image a config runs (and a code env on it): content tags, no daemon needed, so the
kernel start path can ask."""

from __future__ import annotations

from ..config import ConfigFile, ExecutionConfig
from .envrecipe import CodeEnvError, EnvRecipe, recipe_for
from .recipe import base_image_tag
from .registry import qualified


def resolve_image(
    config_file: ConfigFile, config: ExecutionConfig, code_env: str | None = None
) -> str:
    """The image a config runs: its base image's content tag, or its image reference.

    With ``code_env``, the (env, config) image's content tag (see :mod:`.envrecipe`); a
    code env not available for the config raises :class:`.envrecipe.CodeEnvError`. A
    config with a ``registry`` runs the image by its name in that registry.
    """
    spec = config_file.base_image_of(config)
    ref = base_image_tag(spec) if spec is not None else config.image
    if code_env:
        ref = recipe_for(config_file, code_env, config, ref).tag
    elif spec is None:
        return ref  # an image reference is used as written
    return qualified(config.registry, ref)


def base_ref_of(config_file: ConfigFile, config: ExecutionConfig) -> str:
    """The local image a config's envs are layered on (a base image's content tag)."""
    spec = config_file.base_image_of(config)
    return base_image_tag(spec) if spec is not None else config.image


def env_recipe(config_file: ConfigFile, env_name: str, config_name: str) -> EnvRecipe:
    """The checked recipe for (env, config); unknown names raise :class:`CodeEnvError`."""
    try:
        config = config_file.get(config_name)
    except KeyError as exc:
        raise CodeEnvError(exc.args[0]) from None
    return recipe_for(config_file, env_name, config, base_ref_of(config_file, config))
