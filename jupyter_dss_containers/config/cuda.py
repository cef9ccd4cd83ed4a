"""The cross-checks of a base image's CUDA settings (``cuda_version``, ``cuda_libraries``):
known versions and libraries of the one table (:mod:`jupyter_dss_containers.cudasets`), and
only where they mean something (``with_cuda: true`` on a ``bootstrap: debian`` image)."""

from __future__ import annotations

from typing import Any

from .. import cudasets

KEYS = ("cuda_version", "cuda_libraries")


def cuda_version_text(value: Any) -> Any:
    """A YAML number (``cuda_version: 12.4``) read as the text it was written as."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def cuda_problems(base_images: dict[str, Any]) -> list[tuple[str, str]]:
    """``(path, what was expected)`` for every CUDA setting of the base images that is wrong."""
    problems: list[tuple[str, str]] = []
    for name, spec in base_images.items():
        where = f"base_images.{name}"
        present = [key for key in KEYS if key in spec]
        if present and not spec.get("with_cuda", False):
            why = "expected only with with_cuda: true"
            problems += [(f"{where}.{key}", why) for key in present]
            continue
        if present and "from" in spec:
            problems += [
                (
                    f"{where}.{key}",
                    "expected only with bootstrap: debian: an image named by 'from' "
                    "(e.g. nvidia/cuda) brings its own CUDA",
                )
                for key in present
            ]
            continue
        if "cuda_version" in spec:
            value = spec["cuda_version"]
            if cudasets.version_problem(cuda_version_text(value)):
                # the value as written: a YAML number gets the hint to quote it
                problems.append((f"{where}.cuda_version", str(cudasets.version_problem(value))))
        chosen = spec.get("cuda_libraries")
        if isinstance(chosen, list):
            for i, library in enumerate(chosen):
                problem = cudasets.library_problem(library)
                if problem:
                    problems.append((f"{where}.cuda_libraries[{i}]", problem))
    return problems
