"""A base image's recipe: its name, its content hash and the Dockerfile, one concept.

The tag is ``dss-containers/base-<name>:<hash12>``, a hash of everything that goes into the
image (spec, kernel pins, wheel names, apt sources, the rendered recipe itself), so naming
an image needs no daemon and a second build is a no-op. A bootstrapped image also names its
*root file system*, ``dss-containers/rootfs:<hash12>``, whose hash leaves out the name, the
description and the Dockerfile fragments, so base images that differ only in those share it.
Dockerfile fragments run as root; the image's user is set back to ``1000:100`` after them.

Pure but for two reads of the host: the apt sources and a configured wheelhouse's listing.
"""

from __future__ import annotations

import platform
import shlex
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import BaseImageSpec
from ..imagecontract import (
    IMAGE_GID,
    IMAGE_HOME,
    IMAGE_PATH,
    IMAGE_REPO_PREFIX,
    IMAGE_UID,
    IMAGE_USER,
    IMAGE_USER_NAME,
    KERNEL_PYTHON,
    LABEL_BASE_IMAGE,
    LABEL_CONTENT_HASH,
    LABEL_ROOTFS,
    LABEL_WITH_R,
    ROOTFS_REPO,
    VENV,
)
from .apt import bootstrap_sources
from .cuda import cuda_content, cuda_hooks, cuda_label
from .wheels import kernel_pins, requirements, sha256_of, wheel_names

#: bump when a change of the build changes images in a way the hashed recipe (Dockerfile,
#: customize hooks, import settings) does not show, e.g. mmdebstrap options
BUILDER_VERSION = "1"
#: an image for ``from:`` where a registry can be reached (a bootstrapped ``with_cuda`` image
#: gets NVIDIA's wheels instead, :mod:`.cuda`)
CUDA_DEFAULT_FROM = "nvidia/cuda:12.4.1-runtime-ubuntu22.04"
BOOTSTRAP_PACKAGES = ("python3", "python3-venv", "tini")
R_PACKAGES = ("r-base-core", "r-cran-irkernel")
#: every .pyc of the venv checked against nothing: mmdebstrap clamps file times, which would
#: make timestamp-based ones (ensurepip's too, hence -f) stale and recompiled at each start
COMPILEALL = f"{KERNEL_PYTHON} -m compileall -q -f --invalidation-mode unchecked-hash {VENV}/lib"
#: the image's user, created with its home (:data:`IMAGE_HOME`) by ``useradd -m``
_USERADD = f"useradd -m -u {IMAGE_UID} -g {IMAGE_GID} -s /bin/bash {IMAGE_USER_NAME}"


# --------------------------------------------------------------------------- naming


def repository(spec: BaseImageSpec) -> str:
    return f"{IMAGE_REPO_PREFIX}base-{spec.name}"


def friendly_tag(spec: BaseImageSpec) -> str:
    """The moving tag of the last image built for this base image name."""
    return f"{repository(spec)}:latest"


def base_image_tag(spec: BaseImageSpec) -> str:
    """The content tag: same spec, same tag (given the same host apt sources and ipykernel)."""
    return f"{repository(spec)}:{content_hash(spec)[:12]}"


def rootfs_tag(spec: BaseImageSpec) -> str:
    """The tag of a bootstrapped image's root file system (shared by same-content specs)."""
    return f"{ROOTFS_REPO}:{sha256_of(rootfs_content(spec))[:12]}"


def content_hash(spec: BaseImageSpec) -> str:
    """sha256 of a canonical JSON of everything that goes into the image."""
    return sha256_of(image_content(spec))


def is_bootstrap(spec: BaseImageSpec) -> bool:
    """Bootstrap unless the spec names an image to build on (``with_cuda`` too: its CUDA
    comes from NVIDIA's wheels, :mod:`.cuda`; ``from: nvidia/cuda...`` where one can pull)."""
    return not spec.from_image


def effective_from(spec: BaseImageSpec) -> str | None:
    """The image a Dockerfile build starts from (None: a bootstrapped one)."""
    return spec.from_image or None


def image_content(spec: BaseImageSpec) -> dict[str, Any]:
    """All inputs of the final image; the description and wheelhouse path are left out."""
    fields = asdict(spec)
    for key in ("description", "wheelhouse"):
        fields.pop(key)
    if not spec.with_cuda:  # so that images without CUDA keep the tags they had
        fields.pop("cuda_version")
        fields.pop("cuda_libraries")
    content = {
        "builder": BUILDER_VERSION,
        "spec": fields,
        "from": effective_from(spec),
        "kernel": kernel_pins(),
        "wheels": wheel_names(spec),
        "recipe": _render(spec, True, "LABEL"),
    }
    if is_bootstrap(spec):
        content["rootfs"] = rootfs_content(spec)
    return content


def rootfs_content(spec: BaseImageSpec) -> dict[str, Any]:
    """Inputs of the bootstrapped root file system (shared by same-content base images)."""
    content = {
        "builder": BUILDER_VERSION,
        "suite": spec.suite,
        "arch": platform.machine(),
        "apt": [asdict(s) for s in bootstrap_sources(spec.suite)],
        "packages": bootstrap_packages(spec),
        "with_r": spec.with_r,
        "kernel": kernel_pins(),
        "python_packages": list(spec.python_packages),
        "wheels": wheel_names(spec),
        "hooks": customize_hooks(spec, Path("/wheels")),
        "import": import_changes(spec),
    }
    cuda = cuda_content(spec)
    if cuda is not None:  # absent otherwise: root file systems without CUDA keep their tags
        content["cuda"] = cuda
    return content


# --------------------------------------------------------------------------- bootstrap


def bootstrap_packages(spec: BaseImageSpec) -> list[str]:
    """The Debian packages of a bootstrapped root file system."""
    extra = R_PACKAGES if spec.with_r else ()
    return list(dict.fromkeys((*BOOTSTRAP_PACKAGES, *spec.system_packages, *extra)))


def customize_hooks(spec: BaseImageSpec, wheels: Path) -> list[str]:
    """mmdebstrap's customize hooks: the venv from ``wheels``, the kernel checked, the user."""
    pip = f"{VENV}/bin/pip install -q --no-cache-dir --disable-pip-version-check --no-index"
    packages = " ".join(shlex.quote(r) for r in requirements(spec))
    hooks = [
        'mkdir -p "$1/tmp/wh"',
        f"copy-in {wheels}/. /tmp/wh",
        in_chroot(f"/usr/bin/python3 -m venv {VENV}"),
        in_chroot(f"{pip} --find-links /tmp/wh --no-compile {packages}"),
        in_chroot(COMPILEALL),
        in_chroot(f"{KERNEL_PYTHON} -c 'import ipykernel'"),
        *(in_chroot(command) for command in cuda_hooks(spec)),
    ]
    if spec.with_r:
        hooks.append(in_chroot("Rscript -e 'library(IRkernel)'"))
    hooks += [
        in_chroot(_USERADD),
        'rm -rf "$1/tmp/wh"',
    ]
    return hooks


def in_chroot(command: str) -> str:
    """A customize hook running ``command`` in the new system, without the host's env."""
    env = "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8"
    return f'chroot "$1" {env} {command}'


def import_changes(spec: BaseImageSpec, rootfs: str | None = None) -> list[str]:
    """Image settings given at import (a tarball has none); with ``rootfs`` (its tag), the
    label naming it."""
    changes = [
        f"ENV PATH={IMAGE_PATH}",
        f"ENV HOME={IMAGE_HOME}",
        "ENV LANG=C.UTF-8",
        f"USER {IMAGE_USER}",
        f"WORKDIR {IMAGE_HOME}",
        f"LABEL {LABEL_WITH_R}={str(spec.with_r).lower()}",
    ]
    if rootfs is not None:
        changes.append(f"LABEL {LABEL_ROOTFS}={rootfs.rpartition(':')[2]}")
    return changes


# --------------------------------------------------------------------------- Dockerfile


def render_dockerfile(spec: BaseImageSpec, wheelhouse_present: bool) -> str:
    """The Dockerfile of the final build step.

    For a ``from:`` image: the whole setup on top of that image, tolerant of
    an existing ``/opt/dss/venv`` and uid 1000. For a bootstrapped one: labels and
    fragments on top of its root file system. ``dockerfile_prepend`` goes before ``FROM``
    (``ARG`` lines, extra stages); ``dockerfile_append`` runs as root, then the user is
    set back to 1000:100.
    """
    return _render(spec, wheelhouse_present, _label_line(spec))


def _render(spec: BaseImageSpec, wheelhouse_present: bool, label_line: str) -> str:
    parts = [spec.dockerfile_prepend.strip()]
    if is_bootstrap(spec):
        parts += [f"FROM {rootfs_tag(spec)}"]
        if spec.dockerfile_append.strip():
            parts += ["USER root", spec.dockerfile_append.strip(), f"USER {IMAGE_USER}"]
        parts += [label_line]
    else:
        parts += _from_image_steps(spec, wheelhouse_present, label_line)
    return "\n".join(p for p in parts if p) + "\n"


def _from_image_steps(spec: BaseImageSpec, wheelhouse_present: bool, label_line: str) -> list[str]:
    parts = [
        f"FROM {effective_from(spec)}",
        "USER root",
        f"RUN {_install_system_packages(spec)}",
        f"RUN {_ensure_user()}",
    ]
    if wheelhouse_present:
        parts += ["COPY wheelhouse/ /tmp/dss-wheelhouse/"]
    parts += [f"RUN {_install_kernel(spec, wheelhouse_present)}"]
    if spec.with_r:
        parts += ["RUN Rscript -e 'library(IRkernel)'"]
    return [
        *parts,
        f"ENV PATH={VENV}/bin:$PATH HOME={IMAGE_HOME}",
        spec.dockerfile_append.strip(),
        label_line,
        f"WORKDIR {IMAGE_HOME}",
        f"USER {IMAGE_USER}",
    ]


def _label_line(spec: BaseImageSpec) -> str:
    labels = {
        LABEL_BASE_IMAGE: spec.name,
        LABEL_CONTENT_HASH: content_hash(spec),
        LABEL_WITH_R: str(spec.with_r).lower(),
        **cuda_label(spec),
    }
    return "LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items())


def missing_packages_script(spec: BaseImageSpec) -> str:
    """Shell that sets ``$need`` to the packages the image still lacks.

    Python counts as present when ``python3`` can make a venv (so ``python:3.x`` images
    keep their own Python); other packages are checked with dpkg.
    """
    extra = R_PACKAGES if spec.with_r else ()
    wanted = " ".join(shlex.quote(p) for p in (*spec.system_packages, *extra))
    return "; ".join(
        [
            'need=""',
            "{ command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; }"
            ' || need="$need python3 python3-venv"',
            'command -v tini >/dev/null || need="$need tini"',
            f'for p in {wanted}; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done'
            if wanted
            else "true",
        ]
    )


_APT_INSTALL_NEEDED = (
    'if [ -n "$need" ]; then '
    "if ! command -v apt-get >/dev/null; then "
    'echo "missing packages:$need, and no apt-get in the base image" >&2; exit 1; fi; '
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
    "--no-install-recommends $need; apt-get clean; "
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; fi"
)


def _install_system_packages(spec: BaseImageSpec) -> str:
    return f"set -eu; {missing_packages_script(spec)}; {_APT_INSTALL_NEEDED}"


def _ensure_user() -> str:
    return (
        f"set -eu; getent group {IMAGE_GID} >/dev/null || groupadd -g {IMAGE_GID} users; "
        f"getent passwd {IMAGE_UID} >/dev/null || {_USERADD}; "
        f"mkdir -p {IMAGE_HOME} && chown {IMAGE_USER} {IMAGE_HOME}"
    )


def _install_kernel(spec: BaseImageSpec, wheelhouse_present: bool) -> str:
    """Make or update the venv; recompile only when pip changed it (else the layer is empty)."""
    source = "--no-index --find-links /tmp/dss-wheelhouse " if wheelhouse_present else ""
    packages = " ".join(shlex.quote(r) for r in requirements(spec))
    freeze = f"{VENV}/bin/pip freeze --all 2>/dev/null"
    return (
        f"set -eu; [ -x {KERNEL_PYTHON} ] || python3 -m venv {VENV}; before=$({freeze}); "
        f"{VENV}/bin/pip install -q --no-cache-dir --disable-pip-version-check {source}"
        f"--no-compile {packages}; "
        f'[ "$before" = "$({freeze})" ] || {COMPILEALL}; '
        "rm -rf /tmp/dss-wheelhouse"
    )
