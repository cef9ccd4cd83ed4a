"""Code-env images: build one per (env, config) on the config's base image, list their state.

The packages are installed in a throw-away container of the base image (as root, network
``none`` when offline) with the wheelhouse copied into it, then the container is committed:
the image gets one layer holding what pip installed and none holding the wheels, and the
build works the same on a remote daemon. The tag is set by the commit, so a failed build
leaves no tag. Wheels come from, in order: ``--wheelhouse``/``defaults.wheelhouse`` (a
folder), else ``pip download`` on the host for the image's Python and glibc (cached), or,
``online``, pip inside the build reads the package index itself.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import docker.errors

from . import images
from .config import ConfigFile, ExecutionConfig
from .envrecipe import (
    LABEL_CODE_ENV,
    LABEL_EXEC_CONFIG,
    WHEELHOUSE_DIR,
    CodeEnvError,
    EnvRecipe,
    recipe_for,
)
from .registry import PushResult, RegistryError, push_image

BUILD_TIMEOUT = 1800
_PROBE = (
    "import platform, sys; v = sys.version_info; "
    "print(f'{v[0]}.{v[1]}'); print(platform.libc_ver()[1])"
)


@dataclass(frozen=True)
class EnvBuild:
    """The outcome of :func:`build_env_image`."""

    tag: str
    built: bool
    push: PushResult | None = None


# --------------------------------------------------------------------------- naming


def base_ref_of(config_file: ConfigFile, config: ExecutionConfig) -> str:
    """The local image a config's envs are layered on (a base image's content tag)."""
    spec = config_file.base_image_of(config)
    return images.base_image_tag(spec) if spec is not None else config.image


def env_recipe(config_file: ConfigFile, env_name: str, config_name: str) -> EnvRecipe:
    """The checked recipe for (env, config); unknown names raise :class:`CodeEnvError`."""
    try:
        config = config_file.get(config_name)
    except KeyError as exc:
        raise CodeEnvError(exc.args[0]) from None
    return recipe_for(config_file, env_name, config, base_ref_of(config_file, config))


# --------------------------------------------------------------------------- build


def build_env_image(
    config_file: ConfigFile,
    env_name: str,
    config_name: str,
    client: docker.DockerClient,
    progress: images.ProgressSink | None = None,
    *,
    force: bool = False,
    wheelhouse: str | Path | None = None,
    online: bool = False,
    push: bool = True,
) -> EnvBuild:
    """Build the (env, config) image unless its content tag exists; push it to the registry.

    The config's base image is built first when it is missing (a no-op otherwise).
    Failures raise :class:`images.ImageBuildError` ending with the build log's tail.
    """
    recipe = env_recipe(config_file, env_name, config_name)
    config = config_file.get(config_name)
    run = images.BuildRun(f"{env_name} ({config_name})", progress, kind="code env image")
    built = False
    with images.daemon_errors(run):
        if force or not images.image_exists(client, recipe.tag):
            _ensure_base(config_file, config, client, progress, run)
            folder = None if online else _wheels(config_file, recipe, client, run, wheelhouse)
            started = time.monotonic()
            _install_and_commit(client, recipe, run, folder)
            run.emit("done", f"built {recipe.tag} in {time.monotonic() - started:.0f} s", 1.0)
            built = True
        else:
            run.emit("cached", f"{recipe.tag} is up to date", 1.0)
        pushed = None
        if push and config.registry:
            pushed = _push(client, recipe.tag, config.registry, run)
    return EnvBuild(recipe.tag, built, pushed)


def _ensure_base(
    config_file: ConfigFile,
    config: ExecutionConfig,
    client: docker.DockerClient,
    progress: images.ProgressSink | None,
    run: images.BuildRun,
) -> None:
    spec = config_file.base_image_of(config)
    if spec is not None:
        images.build_base_image(spec, client, progress=progress)
    elif not images.image_exists(client, config.image):
        raise run.fail(f"the image {config.image} of config {config.name!r} is not on the daemon")


def _push(client: docker.DockerClient, tag: str, registry: str, run: images.BuildRun) -> PushResult:
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
    run: images.BuildRun,
    wheelhouse: str | Path | None,
) -> Path | None:
    """The folder whose wheels go into the build (None when the env has no packages)."""
    if not recipe.packages:
        return None
    given = wheelhouse or config_file.defaults.get("wheelhouse")
    if given:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise run.fail(f"wheelhouse folder {folder} does not exist")
        run.emit("wheelhouse", f"using wheelhouse {folder}")
        return folder
    base = config_file.base_images.get(config_file.get(recipe.config_name).image)
    if base is not None and images.is_bootstrap(base) and base.suite in images.SUITES:
        python, glibc = images.SUITES[base.suite]  # known without running the image
    else:
        python, glibc = _probe(client, recipe.base_ref, run)
    return _download_wheels(recipe, python, glibc, run)


def _probe(client: docker.DockerClient, ref: str, run: images.BuildRun) -> tuple[str, str]:
    """The base image's Python and glibc versions, which the wheels must fit."""
    script = f'p={images.KERNEL_PYTHON}; [ -x "$p" ] || p=python3; exec "$p" -c "{_PROBE}"'
    try:
        raw = client.containers.run(
            ref, entrypoint=["/bin/sh", "-c", script], network_mode="none", remove=True
        )
    except docker.errors.ContainerError as exc:
        raise run.fail(f"cannot run Python in {ref}: {exc}") from None
    lines = raw.decode().split()
    if len(lines) != 2 or not lines[1]:
        raise run.fail(f"cannot tell the Python and glibc of {ref} (got {raw!r})")
    return lines[0], lines[1]


def _download_wheels(recipe: EnvRecipe, python: str, glibc: str, run: images.BuildRun) -> Path:
    """``pip download`` on the host into a cache folder keyed by packages and platform."""
    return images.cached_wheels("env-wheels", list(recipe.packages), python, glibc, run)


def _wheel_tar(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            if path.name.endswith(images.WHEEL_SUFFIXES):
                tar.add(path, arcname=f"{WHEELHOUSE_DIR.lstrip('/')}/{path.name}")
    return buffer.getvalue()


def _commit_changes(config: dict[str, Any], recipe: EnvRecipe) -> list[str]:
    """Keep the base image's user, entry point and command; add the env's labels.

    A commit cannot empty the command (the daemon then keeps the container's), so a base
    without one gets ``/bin/sh``. One ``LABEL`` per label: Podman reads only the first
    pair of a ``LABEL`` change and puts the rest into its value.
    """
    changes = [
        f"USER {config.get('User') or images.IMAGE_USER}",
        f"CMD {json.dumps(config.get('Cmd') or ['/bin/sh'])}",
        *(f"LABEL {k}={json.dumps(v)}" for k, v in recipe.labels().items()),
    ]
    if config.get("Entrypoint"):
        changes.append(f"ENTRYPOINT {json.dumps(config['Entrypoint'])}")
    if config.get("WorkingDir"):
        changes.append(f"WORKDIR {config['WorkingDir']}")
    return changes


def _install_and_commit(
    client: docker.DockerClient, recipe: EnvRecipe, run: images.BuildRun, wheels: Path | None
) -> None:
    offline = wheels is not None or not recipe.packages
    run.emit("install", f"{' '.join(recipe.packages + recipe.r_packages)} on {recipe.base_ref}")
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
    try:
        if wheels is not None:
            container.put_archive("/", _wheel_tar(wheels))
        container.start()
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode("utf-8", errors="replace").splitlines():
                run.log("install", line)
        code = container.wait(timeout=BUILD_TIMEOUT).get("StatusCode")
        if code != 0:
            raise run.fail(f"installing the packages exited with code {code}")
        repository, _, tag = recipe.tag.rpartition(":")
        container.commit(repository, tag, changes=_commit_changes(base, recipe))
    finally:
        container.remove(force=True)


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class ImageState:
    """One image the config file implies, or an old build of one: built, stale or missing."""

    kind: str  # "base" or "env"
    name: str
    config: str | None
    ref: str
    state: str  # "built", "stale" or "missing"
    size: int | None = None
    created: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "config": self.config,
            "ref": self.ref,
            "state": self.state,
            "size": self.size,
            "created": self.created.isoformat() if self.created else None,
            "age_seconds": _age(self.created),
        }


def image_states(config_file: ConfigFile, client: docker.DockerClient) -> list[ImageState]:
    """Every base and (env, config) image the file implies, plus stale older builds."""
    out: list[ImageState] = []
    for spec in config_file.base_images.values():
        expected = images.base_image_tag(spec)
        repository = expected.rpartition(":")[0]
        found = client.api.images(name=repository)
        out += _states("base", spec.name, None, expected, found)
    for env in config_file.code_envs.values():
        for config in config_file.execution_configs.values():
            if not env.is_available_for(config.name):
                continue
            try:
                recipe = env_recipe(config_file, env.name, config.name)
            except CodeEnvError:
                continue  # e.g. R packages on a base without R: `build-env` says why
            # one label filter, the other checked here: Podman 4 finds nothing for two
            found = client.api.images(filters={"label": [f"{LABEL_CODE_ENV}={env.name}"]})
            found = [
                i for i in found if (i.get("Labels") or {}).get(LABEL_EXEC_CONFIG) == config.name
            ]
            out += _states("env", env.name, config.name, recipe.tag, found)
    return out


def prune_stale_images(
    config_file: ConfigFile, client: docker.DockerClient
) -> tuple[list[ImageState], dict[str, str]]:
    """Remove the older builds :func:`image_states` calls stale (current ones are never
    touched, nor images of names the file does not define); returns (removed, {ref: why
    kept}). A build a container still uses, running or stopped, is kept."""
    in_use = {c.attrs.get("Image") for c in client.containers.list(all=True, ignore_removed=True)}
    removed, kept = [], {}
    for state in image_states(config_file, client):
        if state.state != "stale":
            continue
        try:
            image = client.images.get(state.ref)
            if image.id in in_use:
                kept[state.ref] = "a container uses it (remove the container first)"
                continue
            client.images.remove(state.ref)
        except docker.errors.ImageNotFound:
            continue  # removed meanwhile
        except docker.errors.APIError as exc:
            kept[state.ref] = str(exc.explanation or exc)
            continue
        removed.append(state)
    return removed, kept


def _states(
    kind: str, name: str, config: str | None, expected: str, found: list[dict[str, Any]]
) -> list[ImageState]:
    current = None
    stale = []
    repository = expected.rpartition(":")[0]
    for image in found:
        tags = [t for t in _short_tags(image) if t.rpartition(":")[0] == repository]
        if expected in tags:
            current = image
        elif tags:
            own = [t for t in tags if not t.endswith(":latest")] or tags
            stale.append(ImageState(kind, name, config, own[0], "stale", *_size_age(image)))
    if current is None:
        return [ImageState(kind, name, config, expected, "missing"), *stale]
    return [ImageState(kind, name, config, expected, "built", *_size_age(current)), *stale]


#: how Podman qualifies our unqualified names: imported or loaded, tagged or built
_IMPLIED_REGISTRIES = ("localhost/", "docker.io/library/", "docker.io/")


def _short_tags(image: dict[str, Any]) -> list[str]:
    """The image's tags as we name them: ``docker.io/dss-containers/x:1`` is ours."""
    out = []
    for tag in image.get("RepoTags") or []:
        for prefix in _IMPLIED_REGISTRIES:
            if tag.startswith(prefix):
                tag = tag[len(prefix) :]
                break
        out.append(tag)
    return out


def _size_age(image: dict[str, Any]) -> tuple[int | None, datetime | None]:
    created = image.get("Created")
    when = datetime.fromtimestamp(created, tz=timezone.utc) if isinstance(created, int) else None
    return image.get("Size"), when


def _age(created: datetime | None) -> float | None:
    return (datetime.now(timezone.utc) - created).total_seconds() if created else None


_AGE_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def format_age(seconds: float | None) -> str:
    """``5400`` -> ``1h``: how old an image is, for tables."""
    if seconds is None:
        return "-"
    for unit, size in _AGE_UNITS:
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return "0s"
