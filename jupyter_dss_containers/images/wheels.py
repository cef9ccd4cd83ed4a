"""The Python packages an image gets, and the wheels they come from.

What pip installs into the kernel's venv (the pinned kernel, then the spec's packages), and
the wheelhouse it installs from: a configured folder, or ``pip download`` on the host for
the image's Python and glibc, cached under the user cache folder so that a rebuild needs
no package index.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..config import BaseImageSpec
from .cuda import cuda_requirements
from .progress import BuildRun, stream_process

#: the kernel packages of every image we build: pinned here, not taken from the host, so
#: upgrading the server's own ipykernel does not turn every image tag stale
KERNEL_PINS = {"ipykernel": "7.4.0"}
#: Debian suite -> (Python version, glibc version): what the wheelhouse must fit
SUITES = {"bullseye": ("3.9", "2.31"), "bookworm": ("3.11", "2.36"), "trixie": ("3.13", "2.41")}
WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")
_PIP_DOWNLOAD = ("--disable-pip-version-check", "--progress-bar", "off", "--only-binary=:all:")


def kernel_pins() -> dict[str, str]:
    """The kernel packages installed into every image (part of every content hash)."""
    return dict(KERNEL_PINS)


def requirements(spec: BaseImageSpec) -> list[str]:
    """What pip installs into the venv: the pinned kernel, the CUDA wheels of a bootstrapped
    ``with_cuda`` image (:mod:`.cuda`), then the spec's packages.

    A configured wheelhouse decides the ipykernel version itself (it is hashed by name).
    """
    kernel = ["ipykernel"] if spec.wheelhouse else [f"{n}=={v}" for n, v in kernel_pins().items()]
    return [*kernel, *cuda_requirements(spec), *spec.python_packages]


def sha256_of(data: Any) -> str:
    """sha256 of a canonical JSON of ``data``: how every content hash is made."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def wheelhouse_path(spec: BaseImageSpec) -> Path:
    """The spec's configured wheelhouse folder (``~`` expanded)."""
    return Path(os.path.expanduser(spec.wheelhouse or ""))


def wheel_names(spec: BaseImageSpec) -> list[str] | None:
    """Names of the files in a configured wheelhouse (None when none is configured)."""
    if not spec.wheelhouse:
        return None
    folder = wheelhouse_path(spec)
    if not folder.is_dir():
        return ["<missing folder>"]
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(WHEEL_SUFFIXES))


def platform_tags(arch: str, glibc: str) -> list[str]:
    """manylinux tags an image with this glibc accepts, newest last.

    Every ``manylinux_2_N`` up to the image's glibc: pip matches ``--platform`` tags exactly
    (it only widens the legacy ``manylinux2014`` to 2010 and 1), and wheels use odd ones
    (NVIDIA's CUPTI 12.9: ``manylinux_2_25``).
    """
    major, minor = (int(x) for x in glibc.split(".")[:2])
    newest = minor if major == 2 else 17
    tags = [f"manylinux_2_17_{arch}", f"manylinux2014_{arch}"]
    tags += [f"manylinux_2_{n}_{arch}" for n in range(18, newest + 1)]
    return tags


def pip_download_command(
    requirements_: list[str],
    dest: Path,
    python: str,
    glibc: str,
    arch: str,
    options: tuple[str, ...] = (),
) -> list[str]:
    """The host's ``pip download`` of binary wheels for another Python and platform
    (``options``: more of pip's, e.g. ``--no-deps`` or ``--no-index --find-links DIR``)."""
    cmd = [sys.executable, "-m", "pip", "download", *_PIP_DOWNLOAD, "--python-version", python]
    for tag in platform_tags(arch, glibc):
        cmd += ["--platform", tag]
    return [*cmd, *options, "-d", str(dest), *requirements_]


def cache_dir() -> Path:
    """Where downloaded wheelhouses are kept between builds."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jupyter-dss-containers"


def ensure_wheelhouse(
    spec: BaseImageSpec, python: str, glibc: str, run: BuildRun | None = None
) -> Path:
    """A cached folder of wheels for the kernel and the spec's packages, for one Python."""
    return cached_wheels(
        "wheelhouse", requirements(spec), python, glibc, run or BuildRun(spec.name, None)
    )


def cached_wheels(
    kind: str, requirements_: list[str], python: str, glibc: str, run: BuildRun
) -> Path:
    """``pip download`` on the host, once per (requirements, Python, platform).

    The folder is filled aside and renamed into place, so a half-done download is never
    used.
    """
    folder, output = try_cached_wheels(kind, requirements_, python, glibc, run)
    if folder is None:
        raise run.fail(output[-1])
    return folder


def try_cached_wheels(
    kind: str,
    requirements_: list[str],
    python: str,
    glibc: str,
    run: BuildRun,
    options: tuple[str, ...] = (),
    options_key: Any = None,
) -> tuple[Path | None, list[str]]:
    """:func:`cached_wheels` that does not raise: ``(folder, [])`` once downloaded (now or
    before), ``(None, pip's output lines)`` when pip failed. Failures are not cached.
    ``options`` go to pip; ``options_key`` stands for them in the cache key (e.g. with a
    wheelhouse's listing)."""
    arch = platform.machine()
    key_data: dict[str, Any] = {"req": requirements_, "python": python, "glibc": glibc}
    key_data["arch"] = arch
    if options:
        key_data["options"] = options_key if options_key is not None else list(options)
    folder = cache_dir() / f"{kind}-{sha256_of(key_data)[:16]}"
    if (folder / ".complete").exists():
        run.emit("wheelhouse", f"using cached wheels {folder}")
        return folder, []
    run.emit("wheelhouse", f"downloading wheels for Python {python} into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    output: list[str] = []

    def keep(line: str) -> None:
        output.append(line.rstrip("\n"))

    try:
        command = pip_download_command(requirements_, partial, python, glibc, arch, options)
        code = stream_process(command, run, "wheelhouse", keep)
        if code != 0:
            output.append(f"pip download exited with code {code}")
            return None, output
        (partial / ".complete").touch()
        try:
            partial.rename(folder)
        except OSError:  # another build finished the same folder first
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder, []


def bootstrap_wheelhouse(spec: BaseImageSpec, run: BuildRun, tmp: Path) -> Path:
    """The wheels to copy into a bootstrapped root file system, in a folder without spaces."""
    if spec.wheelhouse:
        source = wheelhouse_path(spec)
    else:
        if spec.suite not in SUITES:
            known = ", ".join(SUITES)
            raise run.fail(f"no known Python for suite {spec.suite!r} ({known}); set a wheelhouse")
        source = ensure_wheelhouse(spec, *SUITES[spec.suite], run)
    copy = tmp / "wheels"
    copy.mkdir()
    for path in source.iterdir():
        if path.name.endswith(WHEEL_SUFFIXES):
            shutil.copy2(path, copy / path.name)
    return copy
