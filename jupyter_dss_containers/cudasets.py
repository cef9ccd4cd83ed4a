"""The CUDA runtimes an offline image can get: NVIDIA's PyPI wheels, pinned per CUDA version.

One home for the table. ``with_cuda: true`` on a ``bootstrap: debian`` base image installs
the wheels of ``cuda_libraries`` at the versions of ``cuda_version`` into the image's venv
(:mod:`jupyter_dss_containers.images.cuda`), from the same host-side wheelhouse as ipykernel,
so no registry and no ``nvidia/cuda`` image is needed. The sets follow what PyTorch's CUDA
wheels of the same CUDA version pin, so a code env adding ``torch`` finds its libraries
already there. A leaf (it imports nothing of the package): the config checks read it
without loading the image workshop.
"""

from __future__ import annotations

from collections.abc import Iterable

#: a library's name in ``cuda_libraries`` -> its PyPI project (CUDA 12 builds)
PACKAGES = {
    "runtime": "nvidia-cuda-runtime-cu12",
    "nvrtc": "nvidia-cuda-nvrtc-cu12",
    "cublas": "nvidia-cublas-cu12",
    "cudnn": "nvidia-cudnn-cu12",
    "cufft": "nvidia-cufft-cu12",
    "curand": "nvidia-curand-cu12",
    "cusolver": "nvidia-cusolver-cu12",
    "cusparse": "nvidia-cusparse-cu12",
    "nccl": "nvidia-nccl-cu12",
    "nvjitlink": "nvidia-nvjitlink-cu12",
    "cupti": "nvidia-cuda-cupti-cu12",
    "nvtx": "nvidia-nvtx-cu12",
}

#: ``cuda_version`` -> the version of each library's wheel (PyTorch's pins of that CUDA)
VERSIONS: dict[str, dict[str, str]] = {
    "12.4": {
        "runtime": "12.4.127",
        "nvrtc": "12.4.127",
        "cublas": "12.4.5.8",
        "cudnn": "9.1.0.70",
        "cufft": "11.2.1.3",
        "curand": "10.3.5.147",
        "cusolver": "11.6.1.9",
        "cusparse": "12.3.1.170",
        "nccl": "2.21.5",
        "nvjitlink": "12.4.127",
        "cupti": "12.4.127",
        "nvtx": "12.4.127",
    },
    "12.6": {
        "runtime": "12.6.77",
        "nvrtc": "12.6.77",
        "cublas": "12.6.4.1",
        "cudnn": "9.5.1.17",
        "cufft": "11.3.0.4",
        "curand": "10.3.7.77",
        "cusolver": "11.7.1.2",
        "cusparse": "12.5.4.2",
        "nccl": "2.26.2",
        "nvjitlink": "12.6.85",
        "cupti": "12.6.80",
        "nvtx": "12.6.77",
    },
    "12.8": {
        "runtime": "12.8.90",
        "nvrtc": "12.8.93",
        "cublas": "12.8.4.1",
        "cudnn": "9.10.2.21",
        "cufft": "11.3.3.83",
        "curand": "10.3.9.90",
        "cusolver": "11.7.3.90",
        "cusparse": "12.5.8.93",
        "nccl": "2.27.3",
        "nvjitlink": "12.8.93",
        "cupti": "12.8.90",
        "nvtx": "12.8.90",
    },
    "12.9": {
        "runtime": "12.9.79",
        "nvrtc": "12.9.86",
        "cublas": "12.9.1.4",
        "cudnn": "9.10.2.21",
        "cufft": "11.4.1.4",
        "curand": "10.3.10.19",
        "cusolver": "11.7.5.82",
        "cusparse": "12.5.10.65",
        "nccl": "2.27.3",
        "nvjitlink": "12.9.86",
        "cupti": "12.9.79",
        "nvtx": "12.9.79",
    },
}

#: what a library's wheel needs of the others (added, pinned, so pip never picks a version)
NEEDS = {
    "cudnn": ("cublas",),
    "cufft": ("nvjitlink",),
    "cusparse": ("nvjitlink",),
    "cusolver": ("cublas", "cusparse", "nvjitlink"),
}

#: the shared object each library's wheel puts under ``site-packages/nvidia/<x>/lib``
SONAMES = {
    "runtime": "libcudart.so.12",
    "nvrtc": "libnvrtc.so.12",
    "cublas": "libcublas.so.12",
    "cudnn": "libcudnn.so.9",
    "cufft": "libcufft.so.11",
    "curand": "libcurand.so.10",
    "cusolver": "libcusolver.so.11",
    "cusparse": "libcusparse.so.12",
    "nccl": "libnccl.so.2",
    "nvjitlink": "libnvJitLink.so.12",
    "cupti": "libcupti.so.12",
    "nvtx": "libnvToolsExt.so.1",
}

DEFAULT_VERSION = "12.9"
#: the runtime, the runtime compiler and cuBLAS: what CuPy's arrays and matrix products
#: need; cuDNN, cuFFT, NCCL, ... (hundreds of MB each) are asked for by name, or ``all``
DEFAULT_LIBRARIES = ("runtime", "nvrtc", "cublas")
ALL = "all"


def version_of(value: str | None) -> str:
    """The CUDA version a spec's ``cuda_version`` means (None: :data:`DEFAULT_VERSION`)."""
    return DEFAULT_VERSION if value is None else value


def libraries(chosen: Iterable[str] | str | None) -> tuple[str, ...]:
    """The libraries installed for ``cuda_libraries`` (None: the default set; ``all``):
    the chosen ones, the runtime and what they need, in the table's order."""
    if chosen is None:
        chosen = DEFAULT_LIBRARIES
    elif chosen == ALL:
        chosen = tuple(PACKAGES)
    wanted = {"runtime", *chosen}
    queue = list(wanted)
    while queue:
        for needed in NEEDS.get(queue.pop(), ()):
            if needed not in wanted:
                wanted.add(needed)
                queue.append(needed)
    return tuple(name for name in PACKAGES if name in wanted)


def pins(version: str | None, chosen: Iterable[str] | str | None) -> list[str]:
    """``name==version`` of every wheel of ``chosen`` (closed over :data:`NEEDS`)."""
    table = VERSIONS[version_of(version)]
    return [f"{PACKAGES[name]}=={table[name]}" for name in libraries(chosen)]


def version_problem(value: object) -> str | None:
    """What is wrong with a ``cuda_version`` value, in the words of a config error."""
    if isinstance(value, str) and value in VERSIONS:
        return None
    known = ", ".join(repr(v) for v in VERSIONS)
    hint = ' (quote it in YAML: "12.4")' if isinstance(value, float) else ""
    return (
        f"expected one of {known}, the CUDA versions whose NVIDIA wheels are pinned "
        f"(jupyter_dss_containers/cudasets.py), got {value!r}{hint}"
    )


def library_problem(value: object) -> str | None:
    """What is wrong with one entry of ``cuda_libraries``."""
    if isinstance(value, str) and value in PACKAGES:
        return None
    return f"expected one of {', '.join(PACKAGES)}, got {value!r}"
