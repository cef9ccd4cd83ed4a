"""What the launcher decides itself, whatever the caller says: pure builders, no I/O.

A caller proposes a workload (name, image, command, a few labels, private files, ports);
the launcher keeps what is the caller's to choose (the command, the environment, the files
under ``/tmp`` of a container that is theirs anyway) and sets the rest from what it knows:
the owner is the authenticated user, the config and kind labels are checked, the image is
the one the config resolves to, the container runs as the user's own uid, the resource
labels the budgets count are written by the launcher alone, and nothing is mounted that
the config does not name.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pwd
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from .. import ownership
from ..backends.base import WorkloadSpec
from ..config import ExecutionConfig
from ..errors import ReportedError
from ..permissions import Identity
from .wire import spec_from_json

#: labels only the launcher writes: which launcher started it, and the hub server it is
#: bound to (the latest start time of the user's live servers when it was created)
LAUNCHER = ownership.LAUNCHER
HUB_BOUND = ownership.PREFIX + "hub-bound"
#: top-level keys of the config file that a caller's copy keeps (others stay private)
SHARED_KEYS = (
    "execution_configs",
    "base_images",
    "code_envs",
    "defaults",
    "groups",
    "host_kernels",
    "terminals",
)


class Refused(ReportedError):
    """A request the launcher turns down; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    """Who is calling, as the launcher established it (never as the request says)."""

    username: str | None
    groups: frozenset[str] = frozenset()
    #: under a hub: the latest start time (epoch seconds) of the user's live servers
    hub_started: float | None = None
    #: shared-secret mode without a user: the one trusted server, acting for its users
    trusted_server: bool = False

    def identity(self) -> Identity:
        return Identity(self.username or "", self.groups)


@cache
def request_schema() -> dict[str, Any]:
    text = resources.files("jupyter_dss_containers.schema").joinpath("launcher.schema.json")
    return json.loads(text.read_text())


def parse_request(body: Any) -> WorkloadSpec:
    """The caller's proposed workload; 400 naming the first problem and where it is."""
    if not isinstance(body, dict):
        raise Refused("expected a JSON object in the request body", 400)
    validator = jsonschema.Draft202012Validator(
        request_schema(), format_checker=jsonschema.FormatChecker()
    )
    errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        error = errors[0]
        where = ".".join(map(str, error.absolute_path)) or "the body"
        if error.validator == "additionalProperties" and not error.absolute_path:
            extra = sorted(set(body) - set(request_schema()["properties"]))
            raise Refused(
                f"{', '.join(map(repr, extra))} may not be set by a caller: the launcher alone "
                "decides mounts, users and resources (from the execution config)",
                400,
            )
        raise Refused(f"invalid workload request at {where}: {_short(error)}", 400)
    try:
        return spec_from_json(body)
    except ValueError as exc:  # base64 that does not decode
        raise Refused(f"invalid workload request: a file is not base64 ({exc})", 400) from None


def _short(error: jsonschema.ValidationError) -> str:
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description and error.validator in ("pattern", "enum"):
        return f"expected {description}, got {error.instance!r}"[:300]
    return error.message[:300]


def trusted_spec(
    spec: WorkloadSpec,
    config: ExecutionConfig,
    owner: str,
    launcher_id: str,
    extra_labels: dict[str, str],
) -> WorkloadSpec:
    """The spec the launcher creates: the caller's, with the labels that matter set by it."""
    kind = spec.labels[ownership.KIND]
    if not spec.name.startswith(f"dss-{kind}-"):
        raise Refused(f"a {kind} workload's name must start with dss-{kind}-, not {spec.name}", 400)
    named = spec.labels.get(ownership.OWNER, owner)
    if named != owner:
        raise Refused(
            f"user {owner!r} cannot start a workload owned by {named!r}: the owner is the "
            "authenticated user"
        )
    named_config = spec.labels.get(ownership.CONFIG, config.name)
    if named_config != config.name:
        raise Refused(f"the config label says {named_config!r} on a call for {config.name!r}", 400)
    labels = {
        **spec.labels,
        ownership.MANAGED: "true",
        ownership.KIND: kind,
        ownership.CONFIG: config.name,
        ownership.OWNER: owner,
        LAUNCHER: launcher_id,
        **extra_labels,
    }
    return dataclasses.replace(spec, labels=labels)


def check_image(spec: WorkloadSpec, config: ExecutionConfig, expected: str) -> None:
    if spec.image != expected:
        raise Refused(
            f"image {spec.image!r} is not the image of execution config {config.name!r}"
            f"{_env_words(spec)} (expected {expected!r})"
        )


def _env_words(spec: WorkloadSpec) -> str:
    env = spec.labels.get(ownership.CODE_ENV)
    return f" with code env {env!r}" if env else ""


def os_user(username: str, min_uid: int) -> str | None:
    """``uid:gid`` of the OS user of that name when it exists here with ``uid >= min_uid``
    (system accounts are never taken for hub users), else None."""
    try:
        entry = pwd.getpwnam(username)
    except (KeyError, UnicodeEncodeError, ValueError):
        return None
    if entry.pw_uid == 0 or entry.pw_uid < min_uid:
        return None
    return f"{entry.pw_uid}:{entry.pw_gid}"


def as_user(config: ExecutionConfig, user: str | None) -> ExecutionConfig:
    """The config a user's workload runs under: as that uid:gid on Docker; never root."""
    if config.backend != "docker":
        return config  # pods run as the non-root uid the backend sets
    configured = config.docker.user
    if user is None and configured and configured.split(":")[0] in ("0", "root"):
        raise Refused(f"execution config {config.name!r} runs its containers as root: refused")
    if user is None:
        return config
    return dataclasses.replace(config, docker=dataclasses.replace(config.docker, user=user))


def restricted_document(
    doc: dict[str, Any], username: str | None, groups: frozenset[str], permitted: set[str]
) -> dict[str, Any]:
    """The config document a caller sees: the configs they may use and what those need,
    their own groups, no credentials (TLS key paths, kubeconfigs), no budgets.

    ``username`` None (the trusted server of shared-secret mode) sees every config and the
    groups map, for the permission checks it makes itself."""
    configs = {
        name: _without_credentials(cfg, username)
        for name, cfg in doc.get("execution_configs", {}).items()
        if username is None or name in permitted
    }
    out: dict[str, Any] = {"execution_configs": configs}
    images = {cfg.get("image") for cfg in configs.values()}
    out["base_images"] = {
        n: b for n, b in doc.get("base_images", {}).items() if username is None or n in images
    }
    envs = {}
    for name, env in doc.get("code_envs", {}).items():
        available = env.get("available_for", "all")
        if available != "all":
            available = [c for c in available if c in configs]
            if not available:
                continue
        envs[name] = {**env, "available_for": available}
    out["code_envs"] = envs
    defaults = dict(doc.get("defaults", {}))
    if defaults.get("execution_config") not in configs:
        defaults.pop("execution_config", None)
    out["defaults"] = defaults
    if username is None:
        out["groups"] = copy.deepcopy(doc.get("groups", {}))
    else:
        out["groups"] = {username: sorted(groups)}
    return {k: v for k, v in out.items() if k in SHARED_KEYS and v}


def _without_credentials(cfg: dict[str, Any], username: str | None) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    # the caller's kernels talk TCP (CurveZMQ where the image can): the launcher mounts no
    # folder a caller names, so ipc sockets would be out of the caller's reach (a config
    # without a network keeps its transport, and its kernels are refused a clear error)
    if cfg.get("docker", {}).get("network") != "none":
        cfg["transport"] = "tcp"
    cfg.get("docker", {}).pop("tls", None)
    for key in ("kubeconfig", "context"):
        cfg.get("kubernetes", {}).pop(key, None)
    users = cfg.get("permissions", {}).get("users")
    if users is not None and username is not None:  # other users' names are not yours
        cfg["permissions"]["users"] = [u for u in users if u == username]
    return cfg
