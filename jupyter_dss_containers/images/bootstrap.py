"""``bootstrap: debian``: a minimal Debian root file system made by ``mmdebstrap`` from the
host's apt sources, with ipykernel installed into the venv from a wheelhouse, imported
through the docker SDK as ``dss-containers/rootfs:<hash>`` (air-gapped: no registry)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker
import docker.errors

from ..config import BaseImageSpec
from .apt import APT_SOURCES_ENV, bootstrap_sources
from .daemon import error_text, json_lines, untag
from .progress import BuildRun, stream_process
from .recipe import bootstrap_packages, customize_hooks, import_changes

MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
#: mmdebstrap's info lines -> rough share of the bootstrap done
MMDEBSTRAP_PHASES = (
    ("running apt-get update", 0.05),
    ("downloading packages", 0.15),
    ("extracting archives", 0.3),
    ("installing essential packages", 0.35),
    ("installing remaining packages", 0.5),
    ("running --customize-hook", 0.7),
    ("cleaning", 0.85),
    ("creating tarball", 0.9),
    ("done", 1.0),
)


def mmdebstrap_command(spec: BaseImageSpec, wheels: Path, sources: Path, out: Path) -> list[str]:
    """The mmdebstrap call that makes the root file system tarball (hooks run as root)."""
    mode = "root" if os.geteuid() == 0 else "unshare"
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(bootstrap_packages(spec))}",
        f"--mode={mode}",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        '--aptopt=APT::Install-Recommends "false"',
    ]
    if MERGED_USR_HOOKS.is_dir():
        cmd.append(f"--hook-dir={MERGED_USR_HOOKS}")
    cmd += [f"--customize-hook={hook}" for hook in customize_hooks(spec, wheels)]
    return [*cmd, spec.suite, str(out), str(sources)]


def mmdebstrap_progress(line: str) -> float | None:
    """The share of the bootstrap done that an mmdebstrap output line marks, if any."""
    for marker, share in MMDEBSTRAP_PHASES:
        if line.startswith(f"I: {marker}"):
            return share
    return None


def run_mmdebstrap(spec: BaseImageSpec, run: BuildRun, tmp: Path, wheels: Path) -> Path:
    """Make the root file system tarball in ``tmp``; its path."""
    if " " in str(wheels):
        raise run.fail(f"the temporary folder {wheels} contains a space (mmdebstrap copy-in)")
    if shutil.which("mmdebstrap") is None:
        raise run.fail("mmdebstrap is not installed (apt-get install mmdebstrap)")
    sources = bootstrap_sources(spec.suite)
    if not sources:
        raise run.fail(f"no Debian apt sources on this host; set {APT_SOURCES_ENV}")
    sources_file = tmp / "bootstrap.sources"
    sources_file.write_text("\n".join(s.render() for s in sources))
    out = tmp / "rootfs.tar"
    packages = ", ".join(bootstrap_packages(spec))
    run.emit("bootstrap", f"mmdebstrap {spec.suite} with {packages}", 0.0)
    command = mmdebstrap_command(spec, wheels, sources_file, out)
    code = stream_process(command, run, "bootstrap", mmdebstrap_progress)
    if code != 0 or not out.is_file():
        raise run.fail(f"mmdebstrap exited with code {code}")
    return out


def import_rootfs(
    client: docker.DockerClient, run: BuildRun, tarball: Path, rootfs: str, spec: BaseImageSpec
) -> None:
    """Import the tarball as ``rootfs`` with the image settings every base image shares
    (:func:`.recipe.import_changes`)."""
    size = tarball.stat().st_size / 1024**2
    run.emit("import", f"importing {size:.0f} MiB as {rootfs}")
    changes = import_changes(spec, rootfs)
    try:
        # the tag goes in ``repo``: Podman 4 ignores the ``tag`` parameter (``:latest``)
        output = client.api.import_image_from_file(str(tarball), repository=rootfs, changes=changes)
    except docker.errors.APIError as exc:
        raise run.fail(f"docker import: {exc.explanation or exc}") from None
    for entry in json_lines(output):
        if "error" in entry or "errorDetail" in entry:
            untag(client, rootfs)
            raise run.fail(f"docker import: {error_text(entry)}")
