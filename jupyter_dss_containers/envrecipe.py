"""Former home of the code-env recipe: now :mod:`jupyter_dss_containers.images.envrecipe`.
Kept so that ``from jupyter_dss_containers.envrecipe import ...`` goes on working."""

from __future__ import annotations

from .images.envrecipe import (
    ENV_BUILDER_VERSION,
    ENV_REPO_PREFIX,
    LABEL_BASE_REF,
    LABEL_CODE_ENV,
    LABEL_CONTENT_HASH,
    LABEL_EXEC_CONFIG,
    LABEL_PREFIX,
    VENV,
    WHEELHOUSE_DIR,
    CodeEnvError,
    EnvRecipe,
    debian_r_package,
    recipe_for,
)

__all__ = [
    "ENV_BUILDER_VERSION",
    "ENV_REPO_PREFIX",
    "LABEL_BASE_REF",
    "LABEL_CODE_ENV",
    "LABEL_CONTENT_HASH",
    "LABEL_EXEC_CONFIG",
    "LABEL_PREFIX",
    "VENV",
    "WHEELHOUSE_DIR",
    "CodeEnvError",
    "EnvRecipe",
    "debian_r_package",
    "recipe_for",
]
