"""Building the server image (JupyterLab with this extension) offline, once per content tag.

Three steps, each cached: this package's wheel (built from the source checkout, the
JupyterLab sidebar included, or given); its dependencies as wheels for the base image's
Python and glibc (``pip download`` on the host from the machine's configured index, kept
under the user cache folder, as the base images' wheelhouse is); then a classic
``docker build`` with network ``none`` from those wheels alone. The recipe is
:mod:`.server_recipe`. Every function here blocks (pip, zip files, the docker SDK).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ..config import BaseImageSpec
from .build import build_base_image
from .daemon import build_tmpdir, daemon_errors, follow_build, image_exists, untag
from .probe import probe_python
from .progress import BuildRun, ProgressSink, stream_process
from .recipe import is_bootstrap
from .registry import split_ref
from .server_recipe import ENTRYPOINT, ServerRecipe, friendly_server_tag, server_requirements
from .wheels import SUITES, cached_wheels

BUILD_TIMEOUT = 1800


def source_root() -> Path | None:
    """The source checkout this package is imported from, if it is one (has pyproject)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def build_package_wheel(source: Path, dest: Path, run: BuildRun) -> Path:
    """``pip wheel`` of the checkout (the labextension is built by its build hook). Without
    build isolation when the build backends are installed here, so it needs no index."""
    isolated = not all(
        importlib.util.find_spec(m) for m in ("hatchling", "hatch_jupyter_builder", "jupyterlab")
    )
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    command += [] if isolated else ["--no-build-isolation"]
    run.emit("wheel", f"building the wheel of {source}")
    code = stream_process([*command, "-w", str(dest), str(source)], run, "wheel")
    found = sorted(dest.glob("jupyter_dss_containers-*.whl"))
    if code != 0 or not found:
        raise run.fail(f"building the package's wheel exited with code {code}")
    return found[-1]


def wheel_digest(wheel: Path) -> str:
    """sha256 over the members' names and contents: the same files, the same digest,
    whatever times the zip records."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(name).decode()


def _target(
    spec: BaseImageSpec, client: docker.DockerClient, base_ref: str, run: BuildRun
) -> tuple[str, str]:
    """The base image's Python and glibc: known for a bootstrapped suite, else probed."""
    if is_bootstrap(spec) and spec.suite in SUITES:
        return SUITES[spec.suite]
    return probe_python(client, base_ref, run)


def build_server_image(
    spec: BaseImageSpec,
    client: docker.DockerClient,
    progress: ProgressSink | None = None,
    *,
    wheel: Path | None = None,
    force: bool = False,
    extra_tags: tuple[str, ...] = (),
) -> tuple[str, bool]:
    """Build the server image on the base image ``spec`` unless its content tag exists;
    return ``(content tag, built)``. ``wheel``: this package's wheel to install instead of
    one built from the checkout. The base image is built first when missing."""
    run = BuildRun("server", progress, kind="server image")
    with daemon_errors(run), tempfile.TemporaryDirectory(prefix="dss-server-") as tmp:
        base_ref = build_base_image(spec, client, progress=progress)
        if wheel is None:
            source = source_root()
            if source is None:
                raise run.fail("not a source checkout: give the package's wheel (--wheel)")
            wheel = build_package_wheel(source, Path(tmp), run)
        elif not wheel.is_file() or not wheel.name.startswith("jupyter_dss_containers-"):
            raise run.fail(f"{wheel} is not a wheel file of jupyter-dss-containers")
        try:
            requirements = server_requirements(wheel_metadata(wheel))
        except (zipfile.BadZipFile, StopIteration, OSError, UnicodeDecodeError):
            raise run.fail(f"{wheel} is not a readable wheel (no METADATA)") from None
        python, glibc = _target(spec, client, base_ref, run)
        deps = cached_wheels("server-wheels", list(requirements), python, glibc, run)
        files = tuple(sorted(p for p in deps.iterdir() if p.name.endswith(".whl")))
        recipe = ServerRecipe(
            base_ref, requirements, tuple(p.name for p in files), wheel.name, wheel_digest(wheel)
        )
        tag = recipe.tag
        if force or not image_exists(client, tag):
            started = time.monotonic()
            _docker_build(client, run, recipe, files, wheel, force)
            run.emit("done", f"built {tag} in {time.monotonic() - started:.0f} s", 1.0)
            built = True
        else:
            run.emit("cached", f"{tag} is up to date", 1.0)
            built = False
        for name in (friendly_server_tag(), *extra_tags):
            repository, label = split_ref(name)
            try:
                client.api.tag(tag, repository, label, force=True)
            except docker.errors.APIError as exc:
                raise run.fail(f"tagging {name}: {exc.explanation or exc}") from None
        return tag, built


def _docker_build(
    client: docker.DockerClient,
    run: BuildRun,
    recipe: ServerRecipe,
    deps: tuple[Path, ...],
    wheel: Path,
    force: bool,
) -> None:
    run.emit("build", f"docker build -> {recipe.tag} (network none)", 0.0)
    with tempfile.TemporaryFile(dir=build_tmpdir()) as context:
        _write_context(context, recipe, deps, wheel)
        context.seek(0)
        try:
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                tag=recipe.tag,
                decode=True,
                pull=False,
                rm=True,
                forcerm=True,
                nocache=force,
                network_mode="none",
                timeout=BUILD_TIMEOUT,
            )
            follow_build(stream, run)
        except docker.errors.APIError as exc:
            untag(client, recipe.tag)
            raise run.fail(f"docker build: {exc.explanation or exc}") from None
    if not image_exists(client, recipe.tag):
        raise run.fail("docker build finished without producing the image")


def _write_context(fileobj: Any, recipe: ServerRecipe, deps: tuple[Path, ...], wheel: Path) -> None:
    """The build context: Dockerfile, entrypoint.sh, deps/*.whl and package/<wheel>."""
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for name, text, mode in (
            ("Dockerfile", recipe.dockerfile(), 0o644),
            ("entrypoint.sh", ENTRYPOINT, 0o755),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, mode
            tar.addfile(info, io.BytesIO(data))
        for path in deps:
            tar.add(path, arcname=f"deps/{path.name}")
        tar.add(wheel, arcname=f"package/{wheel.name}")
