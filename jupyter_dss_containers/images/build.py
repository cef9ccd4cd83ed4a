"""Building a base image: once per content tag, by Debian bootstrap or by a Dockerfile.

* ``bootstrap: debian`` (air-gapped): the root file system (:mod:`.bootstrap`), reused
  when cached, then a tiny classic ``docker build`` (network ``none``) adds the labels and
  the ``dockerfile_prepend``/``dockerfile_append`` fragments. With ``with_cuda``, NVIDIA's
  CUDA wheels go into its venv too (:mod:`.cuda`).
* ``from: <image>`` (``nvidia/cuda:...`` for CUDA where it can be pulled): the generated
  Dockerfile on top of that image, built with the classic builder; ipykernel comes from a
  wheelhouse in the build context when one can be made for the image's Python, else from
  the package index.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from ..config import BaseImageSpec
from .bootstrap import import_rootfs, run_mmdebstrap
from .daemon import build_tmpdir, daemon_errors, docker_build, image_exists, untag
from .probe import probe_base
from .progress import BuildRun, ProgressSink
from .recipe import (
    base_image_tag,
    effective_from,
    friendly_tag,
    is_bootstrap,
    render_dockerfile,
    rootfs_tag,
)
from .wheels import bootstrap_wheelhouse, ensure_wheelhouse, wheelhouse_path


def build_base_image(
    spec: BaseImageSpec,
    client: docker.DockerClient,
    progress: ProgressSink | None = None,
    force: bool = False,
) -> str:
    """Build a base image unless its content tag exists; return the content tag.

    On success the image carries the content tag and the friendly ``:latest`` tag; on
    failure neither tag is created (a bootstrapped root file system stays cached).
    ``force`` rebuilds everything, the root file system included (not the wheelhouse).
    """
    run = BuildRun(spec.name, progress)
    tag = base_image_tag(spec)
    run.emit("resolve", f"{'bootstrap' if is_bootstrap(spec) else 'Dockerfile'} build -> {tag}")
    with daemon_errors(run):
        return _build(spec, client, run, tag, force)


def _build(
    spec: BaseImageSpec, client: docker.DockerClient, run: BuildRun, tag: str, force: bool
) -> str:
    if not force and image_exists(client, tag):
        _tag_friendly(client, tag, spec)
        run.emit("cached", f"{tag} is up to date", 1.0)
        return tag
    started = time.monotonic()
    if spec.wheelhouse and not wheelhouse_path(spec).is_dir():
        raise run.fail(f"wheelhouse folder {spec.wheelhouse} does not exist")
    if is_bootstrap(spec):
        _build_bootstrapped(spec, client, run, tag, force)
    else:
        _build_from_image(spec, client, run, tag, force)
    try:
        _tag_friendly(client, tag, spec)
    except docker.errors.APIError as exc:
        untag(client, tag)
        raise run.fail(f"tagging {friendly_tag(spec)}: {exc.explanation or exc}") from None
    run.emit("done", f"built {tag} in {time.monotonic() - started:.0f} s", 1.0)
    return tag


def _tag_friendly(client: docker.DockerClient, tag: str, spec: BaseImageSpec) -> None:
    repository, _, name = friendly_tag(spec).rpartition(":")
    client.api.tag(tag, repository, name, force=True)


def _build_bootstrapped(
    spec: BaseImageSpec, client: docker.DockerClient, run: BuildRun, tag: str, force: bool
) -> None:
    if spec.bootstrap not in (None, "debian"):
        raise run.fail(f"unknown bootstrap {spec.bootstrap!r} (expected 'debian')")
    rootfs = rootfs_tag(spec)
    if force or not image_exists(client, rootfs):
        with tempfile.TemporaryDirectory(prefix="dss-bootstrap-", dir=build_tmpdir()) as tmp:
            wheels = bootstrap_wheelhouse(spec, run, Path(tmp))
            tarball = run_mmdebstrap(spec, run, Path(tmp), wheels)
            import_rootfs(client, run, tarball, rootfs, spec)
    else:
        run.emit("bootstrap", f"reusing root file system {rootfs}")
    dockerfile = render_dockerfile(spec, wheelhouse_present=False)
    docker_build(client, run, dockerfile, None, tag, network_mode="none", nocache=force)


def _build_from_image(
    spec: BaseImageSpec, client: docker.DockerClient, run: BuildRun, tag: str, force: bool
) -> None:
    base = effective_from(spec) or ""
    probe = probe_base(client, run, base, spec)
    wheels: Path | None = None
    if spec.wheelhouse:
        wheels = wheelhouse_path(spec)
    elif probe.python and probe.glibc:
        wheels = ensure_wheelhouse(spec, probe.python, probe.glibc, run)
    network = "none" if wheels is not None and not probe.missing else None
    dockerfile = render_dockerfile(spec, wheelhouse_present=wheels is not None)
    docker_build(client, run, dockerfile, wheels, tag, network_mode=network, nocache=force)
