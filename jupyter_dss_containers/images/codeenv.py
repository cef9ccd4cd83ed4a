"""Code-env images: build one per (env, config) on the config's base image, and push it.

The packages are installed in a throw-away container of the base image (as root, network
``none`` when offline) with the wheelhouse copied into it, then the container is committed:
the image gets one layer holding what pip installed and none holding the wheels, and the
build works the same on a remote daemon. The tag is set by the commit, so a failed build
leaves no tag. Wheels come from, in order: ``--wheelhouse``/``defaults.wheelhouse`` (a
folder), else ``pip download`` on the host for the image's Python and glibc (cached), or,
``online``, pip inside the build reads the package index itself. An env that mirrors a
Python environment gets the wheels of the pins that have one (:mod:`.mirrorwheels`), and
its image a label listing what could not be mirrored and why.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ..config import ConfigFile, ExecutionConfig
from ..imagecontract import IMAGE_USER, LABEL_NOT_MIRRORED
from .build import build_base_image
from .daemon import daemon_errors, image_exists
from .envrecipe import MIRROR_FILE, WHEELHOUSE_DIR, EnvRecipe
from .mirror import Unmirrored
from .mirrorwheels import mirror_wheels
from .probe import probe_python
from .progress import BuildRun, ProgressSink
from .recipe import is_bootstrap
from .registry import PushResult, RegistryError, push_image
from .resolve import env_recipe
from .wheels import SUITES, WHEEL_SUFFIXES, cached_wheels

BUILD_TIMEOUT = 1800


@dataclass(frozen=True)
class EnvBuild:
    """The outcome of :func:`build_env_image`."""

    tag: str
    built: bool
    push: PushResult | None = None
    #: what a mirroring env could not mirror (empty when it was up to date: see its label)
    not_mirrored: tuple[Unmirrored, ...] = ()


@dataclass(frozen=True)
class Wheels:
    """What goes into a build's wheelhouse: the wheel files and, for a mirror, the names of
    those installed as they are (written to ``MIRROR_FILE``) and what was left out."""

    files: tuple[Path, ...]
    mirror: tuple[str, ...] = ()
    not_mirrored: tuple[Unmirrored, ...] = ()


# --------------------------------------------------------------------------- build


def build_env_image(
    config_file: ConfigFile,
    env_name: str,
    config_name: str,
    client: docker.DockerClient,
    progress: ProgressSink | None = None,
    *,
    force: bool = False,
    wheelhouse: str | Path | None = None,
    online: bool = False,
    push: bool = True,
) -> EnvBuild:
    """Build the (env, config) image unless its content tag exists; push it to the registry.

    The config's base image is built first when it is missing (a no-op otherwise).
    Failures raise :class:`.progress.ImageBuildError` ending with the build log's tail.
    """
    recipe = env_recipe(config_file, env_name, config_name)
    config = config_file.get(config_name)
    run = BuildRun(f"{env_name} ({config_name})", progress, kind="code env image")
    built = False
    wheels = None
    with daemon_errors(run):
        if force or not image_exists(client, recipe.tag):
            if online and recipe.mirrors:
                raise run.fail(
                    "a mirroring env's wheels are chosen on the host, one pin at a time: "
                    "build it without --online"
                )
            _ensure_base(config_file, config, client, progress, run)
            wheels = None if online else _wheels(config_file, recipe, client, run, wheelhouse)
            started = time.monotonic()
            _install_and_commit(client, recipe, run, wheels)
            run.emit("done", f"built {recipe.tag} in {time.monotonic() - started:.0f} s", 1.0)
            built = True
        else:
            run.emit("cached", f"{recipe.tag} is up to date", 1.0)
        pushed = None
        if push and config.registry:
            pushed = _push(client, recipe.tag, config.registry, run)
    left_out = recipe.not_mirrored + (wheels.not_mirrored if wheels else ())
    return EnvBuild(recipe.tag, built, pushed, left_out if built else ())


def _ensure_base(
    config_file: ConfigFile,
    config: ExecutionConfig,
    client: docker.DockerClient,
    progress: ProgressSink | None,
    run: BuildRun,
) -> None:
    spec = config_file.base_image_of(config)
    if spec is not None:
        build_base_image(spec, client, progress=progress)
    elif not image_exists(client, config.image):
        raise run.fail(f"the image {config.image} of config {config.name!r} is not on the daemon")


def _push(client: docker.DockerClient, tag: str, registry: str, run: BuildRun) -> PushResult:
    run.emit("push", f"pushing to {registry}")
    try:
        result = push_image(client, tag, registry, on_status=lambda s: run.log("push", s))
    except RegistryError as exc:
        raise run.fail(str(exc)) from None
    run.emit("pushed", f"{result.ref} {result.digest}", 1.0)
    return result


def _wheels(
    config_file: ConfigFile,
    recipe: EnvRecipe,
    client: docker.DockerClient,
    run: BuildRun,
    wheelhouse: str | Path | None,
) -> Wheels | None:
    """The wheels that go into the build (None when the env installs nothing)."""
    if not recipe.packages and not recipe.mirrors:
        return None
    given = wheelhouse or config_file.defaults.get("wheelhouse")
    folder = None
    if given:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise run.fail(f"wheelhouse folder {folder} does not exist")
        run.emit("wheelhouse", f"using wheelhouse {folder}")
        if not recipe.mirrors:
            return Wheels(_wheel_files(folder))
    python, glibc = _target(config_file, recipe, client, run)
    files: list[Path] = []
    if recipe.packages:
        own = folder or _download_wheels(recipe, python, glibc, run)
        files += _wheel_files(own)
    if not recipe.mirrors:
        return Wheels(tuple(files))
    found = mirror_wheels(recipe.mirror, python, glibc, run, wheelhouse=folder)
    names = {f.name for f in files}
    files += [f for f in found.files if f.name not in names]
    if found.dependencies:
        run.emit("mirror", f"dependencies the pins do not name: {' '.join(found.dependencies)}")
    return Wheels(tuple(files), tuple(f.name for f in found.files), found.failed)


def _target(
    config_file: ConfigFile, recipe: EnvRecipe, client: docker.DockerClient, run: BuildRun
) -> tuple[str, str]:
    """The image's Python and glibc: known for a bootstrapped suite, else probed."""
    base = config_file.base_images.get(config_file.get(recipe.config_name).image)
    if base is not None and is_bootstrap(base) and base.suite in SUITES:
        return SUITES[base.suite]  # known without running the image
    return probe_python(client, recipe.base_ref, run)


def _wheel_files(folder: Path) -> tuple[Path, ...]:
    return tuple(p for p in sorted(folder.iterdir()) if p.name.endswith(WHEEL_SUFFIXES))


def _download_wheels(recipe: EnvRecipe, python: str, glibc: str, run: BuildRun) -> Path:
    """``pip download`` on the host into a cache folder keyed by packages and platform."""
    return cached_wheels("env-wheels", list(recipe.packages), python, glibc, run)


def wheel_tar(wheels: Path | Iterable[Path], mirror: Iterable[str] | None = None) -> bytes:
    """A tar of the wheels (a folder's, or the files given) under ``WHEELHOUSE_DIR``, with
    ``MIRROR_FILE`` listing the ``mirror`` file names (installed as they are) when given."""
    files = _wheel_files(wheels) if isinstance(wheels, Path) else tuple(wheels)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in files:
            tar.add(path, arcname=f"{WHEELHOUSE_DIR.lstrip('/')}/{path.name}")
        if mirror is not None:
            data = "".join(f"{WHEELHOUSE_DIR}/{name}\n" for name in mirror).encode()
            info = tarfile.TarInfo(MIRROR_FILE.lstrip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def commit_changes(
    config: dict[str, Any], recipe: EnvRecipe, labels: dict[str, str] | None = None
) -> list[str]:
    """Keep the base image's user, entry point and command; add the env's labels (and
    ``labels``, the build's own, e.g. what a mirror left out).

    A commit cannot empty the command (the daemon then keeps the container's), so a base
    without one gets ``/bin/sh``. One ``LABEL`` per label: Podman reads only the first
    pair of a ``LABEL`` change and puts the rest into its value.
    """
    changes = [
        f"USER {config.get('User') or IMAGE_USER}",
        f"CMD {json.dumps(config.get('Cmd') or ['/bin/sh'])}",
        *(f"LABEL {k}={json.dumps(v)}" for k, v in {**recipe.labels(), **(labels or {})}.items()),
    ]
    if config.get("Entrypoint"):
        changes.append(f"ENTRYPOINT {json.dumps(config['Entrypoint'])}")
    if config.get("WorkingDir"):
        changes.append(f"WORKDIR {config['WorkingDir']}")
    return changes


def _install_and_commit(
    client: docker.DockerClient, recipe: EnvRecipe, run: BuildRun, wheels: Wheels | None
) -> None:
    offline = wheels is not None or not (recipe.packages or recipe.mirrors)
    what = " ".join(recipe.packages + recipe.r_packages)
    if recipe.mirrors:
        count = len(wheels.mirror) if wheels else 0
        what = f"{count} wheels mirroring {recipe.mirror_source} {what}".rstrip()
    run.emit("install", f"{what} on {recipe.base_ref}")
    base = client.api.inspect_image(recipe.base_ref).get("Config") or {}
    container = client.containers.create(
        recipe.base_ref,
        # the base's own entry point (nvidia/cuda has one) must not wrap the script
        entrypoint=["/bin/sh", "-c"] if base.get("Entrypoint") else None,
        command=(["/bin/sh", "-c"] if not base.get("Entrypoint") else [])
        + [recipe.install_script(offline=offline)],
        user="0",
        network_mode="none" if offline and not recipe.r_packages else None,
        name=f"dss-build-{recipe.env_name}-{recipe.config_name}-{recipe.content_hash()[:8]}",
    )
    labels = {}
    if recipe.mirrors:
        left_out = recipe.not_mirrored + (wheels.not_mirrored if wheels else ())
        labels[LABEL_NOT_MIRRORED] = json.dumps([u.as_dict() for u in left_out])
    try:
        if wheels is not None:
            mirror = wheels.mirror if recipe.mirrors else None
            container.put_archive("/", wheel_tar(wheels.files, mirror))
        container.start()
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode("utf-8", errors="replace").splitlines():
                run.log("install", line)
        code = container.wait(timeout=BUILD_TIMEOUT).get("StatusCode")
        if code != 0:
            raise run.fail(f"installing the packages exited with code {code}")
        repository, _, tag = recipe.tag.rpartition(":")
        container.commit(repository, tag, changes=commit_changes(base, recipe, labels))
    finally:
        container.remove(force=True)
