"""The image workshop: base images built once per content hash, code-env images layered on
a config's base image, their registries, and the inventory of what is built or stale.

- :mod:`.contract`: what every image is (user, home, venv, labels, names), re-exported
  from its one home :mod:`jupyter_dss_containers.imagecontract`;
- :mod:`.recipe`: a base image's name, content hash and Dockerfile (one concept);
- :mod:`.apt`: the host's Debian apt sources a bootstrap reads;
- :mod:`.wheels`: the packages pip installs and the wheelhouse they come from;
- :mod:`.bootstrap`: ``bootstrap: debian`` with mmdebstrap, imported as a root file system;
- :mod:`.cuda`: NVIDIA's CUDA wheels in a bootstrapped ``with_cuda`` image (the pinned sets
  are :mod:`jupyter_dss_containers.cudasets`);
- :mod:`.probe`: what an image already has (its Python, glibc, missing packages);
- :mod:`.daemon`: the daemon calls of a build (classic build, tags, errors in words);
- :mod:`.build`: :func:`build_base_image`;
- :mod:`.envrecipe` and :mod:`.codeenv`: a code env's recipe and its build;
- :mod:`.mirror` and :mod:`.mirrorwheels`: the pins of a Python environment a code env
  mirrors, what it leaves out, and the wheels that fit the image;
- :mod:`.resolve`: which image a config (and code env) runs, with no daemon;
- :mod:`.registry`: push and pull;
- :mod:`.inventory`: built, stale or missing, and pruning;
- :mod:`.server_recipe` and :mod:`.server_image`: the Jupyter server's own image
  (JupyterLab with this extension on a base image, offline) and its ``docker run`` line;
- :mod:`.progress`: build events and the log tail of failures (the console rendering is
  :mod:`jupyter_dss_containers.cli_progress`).

The names of the former ``images`` module stay importable from here.
"""

from __future__ import annotations

from typing import Any

from ..imagecontract import (
    IMAGE_GID,
    IMAGE_HOME,
    IMAGE_PATH,
    IMAGE_REPO_PREFIX,
    IMAGE_UID,
    IMAGE_USER,
    KERNEL_PYTHON,
    LABEL_BASE_IMAGE,
    LABEL_CONTENT_HASH,
    LABEL_PREFIX,
    LABEL_ROOTFS,
    LABEL_WITH_R,
    ROOTFS_REPO,
    VENV,
)
from .apt import APT_SOURCES_ENV, HOST_APT_DIR, AptSource, bootstrap_sources
from .bootstrap import MERGED_USR_HOOKS, import_rootfs, mmdebstrap_command
from .build import build_base_image
from .codeenv import BUILD_TIMEOUT, EnvBuild, build_env_image, commit_changes
from .daemon import BUILD_TMPDIR_ENV, daemon_errors, image_exists
from .envrecipe import CodeEnvError, EnvRecipe
from .inventory import ImageState, format_age, image_states, prune_stale_images
from .probe import Probe, parse_probe, probe_python
from .progress import LOG_TAIL, BuildEvent, BuildRun, ImageBuildError, ProgressSink
from .recipe import (
    BOOTSTRAP_PACKAGES,
    BUILDER_VERSION,
    CUDA_DEFAULT_FROM,
    R_PACKAGES,
    base_image_tag,
    content_hash,
    effective_from,
    friendly_tag,
    import_changes,
    is_bootstrap,
    render_dockerfile,
    rootfs_tag,
)
from .registry import PushResult, RegistryError, pull_image, push_image
from .resolve import base_ref_of, env_recipe, resolve_image
from .wheels import (
    KERNEL_PINS,
    SUITES,
    WHEEL_SUFFIXES,
    cached_wheels,
    ensure_wheelhouse,
    kernel_pins,
)

__all__ = [
    "APT_SOURCES_ENV",
    "BOOTSTRAP_PACKAGES",
    "BUILDER_VERSION",
    "BUILD_TIMEOUT",
    "BUILD_TMPDIR_ENV",
    "CUDA_DEFAULT_FROM",
    "HOST_APT_DIR",
    "IMAGE_GID",
    "IMAGE_HOME",
    "IMAGE_PATH",
    "IMAGE_REPO_PREFIX",
    "IMAGE_UID",
    "IMAGE_USER",
    "KERNEL_PINS",
    "KERNEL_PYTHON",
    "LABEL_BASE_IMAGE",
    "LABEL_CONTENT_HASH",
    "LABEL_PREFIX",
    "LABEL_ROOTFS",
    "LABEL_WITH_R",
    "LOG_TAIL",
    "MERGED_USR_HOOKS",
    "ROOTFS_REPO",
    "R_PACKAGES",
    "SUITES",
    "VENV",
    "WHEEL_SUFFIXES",
    "AptSource",
    "BuildEvent",
    "BuildRun",
    "CodeEnvError",
    "EnvBuild",
    "EnvRecipe",
    "ImageBuildError",
    "ImageState",
    "Probe",
    "ProgressSink",
    "PushResult",
    "RegistryError",
    "base_image_tag",
    "base_ref_of",
    "bootstrap_sources",
    "build_base_image",
    "build_env_image",
    "cached_wheels",
    "commit_changes",
    "content_hash",
    "daemon_errors",
    "effective_from",
    "ensure_wheelhouse",
    "env_recipe",
    "format_age",
    "friendly_tag",
    "image_exists",
    "image_states",
    "import_changes",
    "import_rootfs",
    "is_bootstrap",
    "kernel_pins",
    "mmdebstrap_command",
    "parse_probe",
    "probe_python",
    "prune_stale_images",
    "pull_image",
    "push_image",
    "render_dockerfile",
    "resolve_image",
    "rootfs_tag",
]


def __getattr__(name: str) -> Any:
    """``images.ConsoleProgress``, moved to the CLI side (:mod:`..cli_progress`)."""
    if name == "ConsoleProgress":
        from ..cli_progress import ConsoleProgress

        return ConsoleProgress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
