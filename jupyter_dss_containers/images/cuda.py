"""How a bootstrapped ``with_cuda`` image gets its CUDA runtime with no registry.

NVIDIA's PyPI wheels (:mod:`jupyter_dss_containers.cudasets`, pinned per ``cuda_version``)
are installed into the kernel's venv by the same pip run, from the same host-side wheelhouse,
as ipykernel; they put their shared objects under ``site-packages/nvidia/<lib>/lib``.
Frameworks built on those wheels (PyTorch, JAX, CuPy) find them by package; anything else
(``ctypes.CDLL("libcudart.so.12")``, a CUDA program run from a shell) finds them through an
``ld.so.conf.d`` entry and the linker cache made at build time. The NVIDIA container
toolkit reruns ``ldconfig`` at start, which keeps that entry and adds the driver's libraries.

An image named by ``from:`` (``nvidia/cuda:...``) brings its own CUDA: nothing is added.
Pure: the pins, the hooks and the hashed description of what goes in.
"""

from __future__ import annotations

from typing import Any

from .. import cudasets
from ..config import BaseImageSpec
from ..imagecontract import KERNEL_PYTHON, LABEL_PREFIX, VENV

#: the linker's configuration file listing the wheels' library folders
LD_CONF = "/etc/ld.so.conf.d/dss-cuda.conf"
#: the image label naming the CUDA version of its wheels
LABEL_CUDA = LABEL_PREFIX + "cuda"
#: the folders the wheels' shared objects land in (a shell glob, expanded in the image)
LIB_GLOB = f"{VENV}/lib/python3*/site-packages/nvidia/*/lib"


def wants_wheels(spec: BaseImageSpec) -> bool:
    """A ``with_cuda`` image that is bootstrapped (not built on a ``from:`` image)."""
    return spec.with_cuda and not spec.from_image


def cuda_requirements(spec: BaseImageSpec) -> list[str]:
    """The pinned NVIDIA wheels pip installs into the venv (none unless :func:`wants_wheels`)."""
    if not wants_wheels(spec):
        return []
    return cudasets.pins(spec.cuda_version, spec.cuda_libraries)


def cuda_content(spec: BaseImageSpec) -> dict[str, Any] | None:
    """What of CUDA goes into the image, for its content hash (None: no CUDA wheels)."""
    if not wants_wheels(spec):
        return None
    return {
        "version": cudasets.version_of(spec.cuda_version),
        "libraries": list(cudasets.libraries(spec.cuda_libraries)),
        "pins": cuda_requirements(spec),
        "ld_conf": LD_CONF,
    }


def linker_setup() -> str:
    """Shell (run in the new system) that lists the wheels' library folders for the linker."""
    return (
        f"/bin/sh -c 'set -eu; ls -d {LIB_GLOB} > {LD_CONF}; chmod 0644 {LD_CONF}; /sbin/ldconfig'"
    )


def load_check(spec: BaseImageSpec) -> str:
    """A command that fails the build unless every library loads by its soname alone
    (no GPU or driver is needed to load them)."""
    names = [cudasets.SONAMES[lib] for lib in cudasets.libraries(spec.cuda_libraries)]
    code = f"import ctypes; [ctypes.CDLL(n) for n in {names!r}]"
    return f'{KERNEL_PYTHON} -c "{code}"'


def cuda_hooks(spec: BaseImageSpec) -> list[str]:
    """The commands (each run in the new system) that follow the venv's pip install."""
    if not wants_wheels(spec):
        return []
    return [linker_setup(), load_check(spec)]


def cuda_label(spec: BaseImageSpec) -> dict[str, str]:
    """The label an image with CUDA wheels carries (its CUDA version); none otherwise."""
    if not wants_wheels(spec):
        return {}
    return {LABEL_CUDA: cudasets.version_of(spec.cuda_version)}
