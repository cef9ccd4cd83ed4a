"""What an image already has, learnt by running it once (network ``none``): its Python and
glibc (which the wheels must fit) and, for a ``from:`` image, the packages it lacks.

One probe script and one parser serve the base-image and the code-env builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import docker
import docker.errors

from ..config import BaseImageSpec
from ..imagecontract import KERNEL_PYTHON
from .daemon import image_exists
from .progress import BuildRun
from .recipe import missing_packages_script

#: prints ``python=3.11`` and ``glibc=2.36`` for the kernel's venv, else the image's python3
PYTHON_PROBE = (
    f'p={KERNEL_PYTHON}; [ -x "$p" ] || p=python3; "$p" -c '
    "'import platform, sys; v = sys.version_info; "
    'print(f"python={v[0]}.{v[1]}"); print("glibc=" + platform.libc_ver()[1])\''
)


@dataclass(frozen=True)
class Probe:
    """What an image has: its Python and glibc (None when unknown), and whether it lacks
    packages the build must install."""

    python: str | None
    glibc: str | None
    missing: bool = True


def parse_probe(output: str) -> Probe:
    """The probe's ``key=value`` lines (``need=`` from the missing-packages script: without
    it, the image counts as lacking packages)."""
    values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    return Probe(
        python=values.get("python") or None,
        glibc=values.get("glibc") or None,
        missing=bool(values.get("need", "x").strip()),  # no answer: assume it lacks some
    )


def probe_base(client: docker.DockerClient, run: BuildRun, ref: str, spec: BaseImageSpec) -> Probe:
    """Run a ``from:`` image once (as root) to learn its Python and what it lacks; an image
    not on the daemon is pulled first (the build would pull it anyway). A probe that cannot
    run says nothing is known and everything may be missing."""
    if not image_exists(client, ref):
        run.emit("resolve", f"pulling {ref}")
        try:
            client.images.pull(ref)
        except docker.errors.APIError as exc:
            reason = exc.explanation or exc
            raise run.fail(f"{ref} is not on the daemon and cannot be pulled: {reason}") from None
    script = (
        f'{missing_packages_script(spec)}; echo "need=$need"; {PYTHON_PROBE} 2>/dev/null || true'
    )
    try:
        raw = client.containers.run(
            ref, entrypoint=["/bin/sh", "-c", script], user="0", network_mode="none", remove=True
        )
    except docker.errors.DockerException:
        return Probe(None, None, True)
    return parse_probe(raw.decode())


def probe_python(client: docker.DockerClient, ref: str, run: BuildRun) -> tuple[str, str]:
    """(Python version, glibc version) of an image, which a code env's wheels must fit."""
    try:
        raw = client.containers.run(
            ref, entrypoint=["/bin/sh", "-c", PYTHON_PROBE], network_mode="none", remove=True
        )
    except docker.errors.ContainerError as exc:
        raise run.fail(f"cannot run Python in {ref}: {exc}") from None
    found = parse_probe(raw.decode())
    if not (found.python and found.glibc):
        raise run.fail(f"cannot tell the Python and glibc of {ref} (got {raw!r})")
    return found.python, found.glibc
