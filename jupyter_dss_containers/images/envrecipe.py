"""What goes into a code-env image, and the content tag that follows from it.

A code env is layered on the base image of one execution config: one image per
(env, config), tagged ``dss-containers/env-<env>:<config>-<hash12>`` where the hash covers
the env's packages, the base image's own content tag and the install script. An
unchanged env is therefore never rebuilt, and a changed base image (new tag) makes every
env on it stale. An env that mirrors a Python environment (:mod:`.mirror`) also hashes the
pins it read, so an unchanged environment is a no-op rebuild and a changed pin rebuilds.
Naming an image needs no daemon (only a mirror's file or installed metadata is read, cached
by modification time), so :func:`.resolve.resolve_image` can use it on the kernel start
path.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement

from ..config import CodeEnvSpec, ConfigFile, ExecutionConfig
from ..errors import ReportedError
from ..imagecontract import (
    ENV_REPO_PREFIX,
    LABEL_BASE_REF,
    LABEL_CODE_ENV,
    LABEL_CONTENT_HASH,
    LABEL_EXEC_CONFIG,
    LABEL_PREFIX,
    VENV,
)
from .mirror import MirrorFileError, MirrorPlan, Unmirrored, read_mirror, requirement_name
from .wheels import sha256_of

#: pip's options for every install of a code-env build (no cache in the image, no chatter)
PIP_INSTALL_OPTIONS = "--no-cache-dir --disable-pip-version-check --progress-bar off"
#: bump when the build changes images in a way the hashed install script does not show
ENV_BUILDER_VERSION = "1"
WHEELHOUSE_DIR = "/tmp/dss-wheelhouse"
#: the file of a mirroring build's wheelhouse that lists the wheel files it installs as they are
MIRROR_FILE = f"{WHEELHOUSE_DIR}/dss-mirror.txt"

__all__ = [
    "ENV_BUILDER_VERSION",
    "ENV_REPO_PREFIX",
    "LABEL_BASE_REF",
    "LABEL_CODE_ENV",
    "LABEL_CONTENT_HASH",
    "LABEL_EXEC_CONFIG",
    "LABEL_PREFIX",
    "MIRROR_FILE",
    "PIP_INSTALL_OPTIONS",
    "VENV",
    "WHEELHOUSE_DIR",
    "CodeEnvError",
    "EnvRecipe",
    "debian_r_package",
    "recipe_for",
]


class CodeEnvError(ReportedError, ValueError):
    """A code env that cannot be used with a config; the message names both."""

    status = 400


@dataclass(frozen=True)
class EnvRecipe:
    """Everything that decides one (env, config) image."""

    env_name: str
    config_name: str
    base_ref: str
    packages: tuple[str, ...]
    r_packages: tuple[str, ...]
    #: the pins of the environment the env mirrors (``name==version``), before the build
    #: learns which have wheels; empty without a mirror
    mirror: tuple[str, ...] = ()
    #: where those pins come from (a file, or the server's environment); None: no mirror
    mirror_source: str | None = None
    #: what the mirror leaves out before any wheel is looked for
    not_mirrored: tuple[Unmirrored, ...] = field(default=(), compare=False)

    @property
    def mirrors(self) -> bool:
        return self.mirror_source is not None

    @property
    def repository(self) -> str:
        return ENV_REPO_PREFIX + self.env_name

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.config_name}-{self.content_hash()[:12]}"

    def content_hash(self) -> str:
        data = {
            "builder": ENV_BUILDER_VERSION,
            "env": self.env_name,
            "config": self.config_name,
            "base": self.base_ref,
            "packages": list(self.packages),
            "r_packages": list(self.r_packages),
            "script": self.install_script(offline=True),
        }
        if self.mirrors:  # only then: the tags of envs without a mirror stay as they were
            data["mirror"] = list(self.mirror)
        return sha256_of(data)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_CODE_ENV: self.env_name,
            LABEL_EXEC_CONFIG: self.config_name,
            LABEL_CONTENT_HASH: self.content_hash(),
            LABEL_BASE_REF: self.base_ref,
        }

    def install_script(self, offline: bool) -> str:
        """The shell run as root in a container of the base image before it is committed.

        Offline, pip reads only the wheelhouse copied to ``/tmp/dss-wheelhouse``; online it
        uses the package index. R packages come from Debian (``r-cran-<name>``), which
        needs the image's apt sources to answer.
        """
        lines = ["set -eu"]
        if self.mirrors:
            lines += self._mirror_lines()
        elif self.packages:
            source = f"--no-index --find-links {WHEELHOUSE_DIR} " if offline else ""
            requirements = " ".join(shlex.quote(p) for p in self.packages)
            lines += [
                f'if [ -x {VENV}/bin/pip ]; then pip="{VENV}/bin/pip"; '
                'else pip="python3 -m pip"; fi',
                f"$pip install {PIP_INSTALL_OPTIONS} {source}{requirements}",
            ]
        if self.r_packages:
            debs = " ".join(shlex.quote(debian_r_package(p)) for p in self.r_packages)
            lines += [
                "apt-get update",
                f"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {debs}",
                "apt-get clean",
                "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin",
            ]
        lines.append(f"rm -rf {WHEELHOUSE_DIR}")
        return "\n".join(lines) + "\n"

    def _mirror_lines(self) -> list[str]:
        """Install the wheels the build chose for the mirror (listed in :data:`MIRROR_FILE`:
        the pins' and their dependencies', exactly, nothing resolved), then the env's own
        packages (resolved, so they win), offline; ``pip check`` says what conflicts (as in
        the source environment), and the kernel must still import."""
        pip = f'"$py" -m pip install {PIP_INSTALL_OPTIONS} --no-index'
        lines = [
            f'py={VENV}/bin/python; [ -x "$py" ] || py=python3',
            f"[ ! -s {MIRROR_FILE} ] || {pip} --no-deps -r {MIRROR_FILE}",
        ]
        if self.packages:
            explicit = " ".join(shlex.quote(p) for p in self.packages)
            lines.append(f"{pip} --find-links {WHEELHOUSE_DIR} {explicit}")
        return [*lines, '"$py" -m pip check || true', '"$py" -c "import ipykernel"']


def debian_r_package(name: str) -> str:
    """``data.table`` -> ``r-cran-data.table``; a name already Debian's is kept."""
    return name if name.startswith("r-") else f"r-cran-{name.lower()}"


def recipe_for(
    config_file: ConfigFile, env_name: str, config: ExecutionConfig, base_ref: str
) -> EnvRecipe:
    """The recipe of ``env_name`` on ``config`` (whose image is ``base_ref``), checked."""
    env = config_file.code_envs.get(env_name)
    if env is None:
        defined = ", ".join(sorted(config_file.code_envs)) or "none"
        raise CodeEnvError(
            f"no code environment named {env_name!r} in {config_file.source} (defined: {defined})"
        )
    if not env.is_available_for(config.name):
        allowed = ", ".join(env.available_for) or "none"
        raise CodeEnvError(
            f"code environment {env_name!r} is not available for execution configuration "
            f"{config.name!r} (code_envs.{env_name}.available_for: {allowed})"
        )
    base = config_file.base_image_of(config)
    if env.r_packages and base is not None and not base.with_r:
        raise CodeEnvError(
            f"code environment {env_name!r} has r_packages but the base image {base.name!r} "
            f"of execution configuration {config.name!r} has no R (set with_r: true)"
        )
    if env.mirror is None:
        return EnvRecipe(env_name, config.name, base_ref, env.packages, env.r_packages)
    plan = _mirror_plan(env)
    own = {n: p for p in env.packages if (n := _name_of(p))}
    pins, skipped = [], list(plan.skipped)
    for pin in plan.pins:
        name = requirement_name(pin)
        if name in own:
            skipped.append(
                Unmirrored(pin, "overridden", f"the env's packages pin {own[name]}", name)
            )
        else:
            pins.append(pin)
    return EnvRecipe(
        env_name,
        config.name,
        base_ref,
        env.packages,
        env.r_packages,
        mirror=tuple(pins),
        mirror_source=plan.source,
        not_mirrored=tuple(skipped),
    )


def _name_of(requirement: str) -> str | None:
    try:
        return requirement_name(requirement)
    except InvalidRequirement:
        return None


def _mirror_plan(env: CodeEnvSpec) -> MirrorPlan:
    try:
        return read_mirror(env.mirror, env.exclude)  # type: ignore[arg-type]
    except MirrorFileError as exc:
        raise CodeEnvError(f"code_envs.{env.name}.mirror: {exc}") from None
