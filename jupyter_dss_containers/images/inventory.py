"""Which images the config file implies, which are built, stale or missing, and the
pruning of older builds (never the current ones, nor images of names the file does not
define, nor one a container still uses). An env that mirrors a Python environment also
says what it could not mirror: a built image from its label (wheels checked), a missing one
from its recipe (what the source leaves out; wheels are checked when it is built)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import docker
import docker.errors

from ..config import ConfigFile
from ..imagecontract import LABEL_CODE_ENV, LABEL_EXEC_CONFIG, LABEL_NOT_MIRRORED
from .envrecipe import CodeEnvError, EnvRecipe
from .recipe import base_image_tag
from .resolve import env_recipe
from .server_recipe import SERVER_REPO


@dataclass(frozen=True)
class ImageState:
    """One image the config file implies, or an old build of one: built, stale or missing."""

    kind: str  # "base", "env" or "server"
    name: str
    config: str | None
    ref: str
    state: str  # "built", "stale" or "missing"
    size: int | None = None
    created: datetime | None = None
    #: a mirroring env's: ``source``, ``pins`` (how many it read), ``wheels_checked`` and
    #: ``not_mirrored`` (requirement, name, reason, detail); None for other images
    mirror: dict[str, Any] | None = None

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
            "mirror": self.mirror,
        }


def image_states(config_file: ConfigFile, client: docker.DockerClient) -> list[ImageState]:
    """Every base and (env, config) image the file implies, plus stale older builds."""
    out: list[ImageState] = []
    for spec in config_file.base_images.values():
        expected = base_image_tag(spec)
        repository = expected.rpartition(":")[0]
        found = client.api.images(name=repository)
        out += classify("base", spec.name, None, expected, found)
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
            states = classify("env", env.name, config.name, recipe.tag, found)
            if recipe.mirrors:
                states = [_with_mirror(s, recipe, found) for s in states]
            out += states
    return out + server_image_states(client)


def server_image_states(
    client: docker.DockerClient, repository: str = SERVER_REPO
) -> list[ImageState]:
    """The server image ``build-server-image`` last tagged ``:latest`` (current) and the
    older builds of that repository (stale); nothing when none was built. Its content tag
    needs this package's wheel to compute, so the moving tag says which one is current."""
    found = client.api.images(name=repository)
    latest = f"{repository}:latest"
    current = next((i for i in found if latest in short_tags(i)), None)
    if current is None:
        return []
    own = [t for t in short_tags(current) if t != latest]
    return classify("server", "server", None, own[0] if own else latest, found)


def _with_mirror(state: ImageState, recipe: EnvRecipe, found: list[dict[str, Any]]) -> ImageState:
    """The state with what its mirror left out: the image's label when it has one."""
    labels = next((i.get("Labels") or {} for i in found if state.ref in short_tags(i)), {})
    left_out = [u.as_dict() for u in recipe.not_mirrored]
    checked = False
    if state.state != "missing" and LABEL_NOT_MIRRORED in labels:
        try:
            left_out = [dict(u) for u in json.loads(labels[LABEL_NOT_MIRRORED])]
            checked = True
        except (TypeError, ValueError):
            pass  # a label we did not write: show what the recipe knows
    mirror = {
        "source": recipe.mirror_source,
        "pins": len(recipe.mirror) if state.state != "stale" else None,
        "wheels_checked": checked,
        "not_mirrored": left_out,
    }
    return replace(state, mirror=mirror)


def prune_stale_images(
    config_file: ConfigFile, client: docker.DockerClient
) -> tuple[list[ImageState], dict[str, str]]:
    """Remove the older builds :func:`image_states` calls stale (current ones are never
    touched, nor images of names the file does not define); returns (removed, {ref: why
    kept}). A build a container still uses, running or stopped, is kept."""
    return prune_states(image_states(config_file, client), client)


def prune_states(
    states: list[ImageState], client: docker.DockerClient
) -> tuple[list[ImageState], dict[str, str]]:
    """Remove the ``stale`` ones of ``states`` that no container uses (see above)."""
    in_use = {c.attrs.get("Image") for c in client.containers.list(all=True, ignore_removed=True)}
    removed, kept = [], {}
    for state in states:
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


def classify(
    kind: str, name: str, config: str | None, expected: str, found: list[dict[str, Any]]
) -> list[ImageState]:
    """The expected image (built or missing) and the stale older builds among ``found``
    (the daemon's image records of the same repository)."""
    current = None
    stale = []
    repository = expected.rpartition(":")[0]
    for image in found:
        tags = [t for t in short_tags(image) if t.rpartition(":")[0] == repository]
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


def short_tags(image: dict[str, Any]) -> list[str]:
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
