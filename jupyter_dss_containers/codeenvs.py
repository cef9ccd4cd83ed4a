"""Former home of the code-env image builds and the image inventory: now
:mod:`jupyter_dss_containers.images.codeenv` and :mod:`jupyter_dss_containers.images.inventory`.
Kept so that ``from jupyter_dss_containers import codeenvs`` goes on working."""

from __future__ import annotations

from .images.codeenv import BUILD_TIMEOUT, EnvBuild, build_env_image, commit_changes
from .images.inventory import ImageState, format_age, image_states, prune_stale_images
from .images.probe import probe_python
from .images.resolve import base_ref_of, env_recipe

__all__ = [
    "BUILD_TIMEOUT",
    "EnvBuild",
    "ImageState",
    "base_ref_of",
    "build_env_image",
    "commit_changes",
    "env_recipe",
    "format_age",
    "image_states",
    "probe_python",
    "prune_stale_images",
]
