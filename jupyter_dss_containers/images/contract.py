"""The image contract, as the builders import it: its one home is
:mod:`jupyter_dss_containers.imagecontract` (a leaf the config and the workspace planner
can read without loading this package)."""

from __future__ import annotations

from ..imagecontract import (
    ENV_REPO_PREFIX,
    IMAGE_GID,
    IMAGE_HOME,
    IMAGE_PATH,
    IMAGE_REPO_PREFIX,
    IMAGE_UID,
    IMAGE_USER,
    IMAGE_USER_NAME,
    KERNEL_PYTHON,
    LABEL_BASE_IMAGE,
    LABEL_BASE_REF,
    LABEL_CODE_ENV,
    LABEL_CONTENT_HASH,
    LABEL_EXEC_CONFIG,
    LABEL_NOT_MIRRORED,
    LABEL_PREFIX,
    LABEL_ROOTFS,
    LABEL_WITH_R,
    ROOTFS_REPO,
    VENV,
)

__all__ = [
    "ENV_REPO_PREFIX",
    "IMAGE_GID",
    "IMAGE_HOME",
    "IMAGE_PATH",
    "IMAGE_REPO_PREFIX",
    "IMAGE_UID",
    "IMAGE_USER",
    "IMAGE_USER_NAME",
    "KERNEL_PYTHON",
    "LABEL_BASE_IMAGE",
    "LABEL_BASE_REF",
    "LABEL_CODE_ENV",
    "LABEL_CONTENT_HASH",
    "LABEL_EXEC_CONFIG",
    "LABEL_NOT_MIRRORED",
    "LABEL_PREFIX",
    "LABEL_ROOTFS",
    "LABEL_WITH_R",
    "ROOTFS_REPO",
    "VENV",
]
