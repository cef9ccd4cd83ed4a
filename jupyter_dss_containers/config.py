"""Execution configurations: finding, loading and validating the config file.

The file is YAML, validated against ``schema/config.schema.json``; everything that reads
configurations (provisioner, kernel specs, CLI, server) goes through :func:`load_config`,
so every consumer sees the same validated objects and the same error messages.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jupyter_core.paths import jupyter_config_path

from .filecache import ParsedFiles
from .workspace import WorkspaceSettings, template_problem

CONFIG_ENV_VAR = "DSS_CONTAINERS_CONFIG"
CONFIG_FILE_NAME = "dss_containers.yaml"
EMBEDDED = "<embedded default>"
#: limits of a Docker config that sets none (``defaults.resources`` in the file overrides them):
#: without them one kernel's fork bomb or runaway allocation takes the host down
DEFAULT_MEMORY = 4 * 1024**3
DEFAULT_PIDS = 1024
TRANSPORTS = ("auto", "ipc", "tcp")

#: what the first notebook imports: the embedded base image ``default`` has these (pinned,
#: from wheels, no registry), so ``pd.read_csv`` and ``--in``/``--out`` of frames just work
DATA_SCIENCE_PACKAGES = (
    "numpy==2.4.6",
    "pandas==3.1.1",
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "pyarrow==26.0.1",
    "cloudpickle==3.1.3",
    "ipywidgets==8.1.9",
)

EMBEDDED_DEFAULT: dict[str, Any] = {
    "base_images": {
        "default": {"bootstrap": "debian", "python_packages": list(DATA_SCIENCE_PACKAGES)}
    },
    "execution_configs": {
        "local": {
            "backend": "docker",
            "image": "default",
            "description": "Local Docker daemon, base image 'default'",
            "permissions": {"groups": ["*"]},
        }
    },
}


class ConfigError(ValueError):
    """A config file that cannot be used; ``str()`` gives one line per problem."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(
            "\n".join(
                f"{source}: {where}: {what}" if where else f"{source}: {what}"
                for where, what in problems
            )
        )

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, list[tuple[str, str]]]]:
        # copy and pickle rebuild it from its parts (the config cache raises copies)
        return type(self), (self.source, self.problems)


# --------------------------------------------------------------------------- units


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)([iI]?)([bB]?)\s*$")
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
#: the largest memory or shm size a config may ask for (1 PiB): more is a typo
_MAX_BYTES = 1024**5


def parse_size(value: int | str) -> int:
    """Bytes from ``512m``, ``2g``, ``256Mi``, ``1GiB`` or an integer (binary units, as Docker)."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit, _, _ = match.groups()
    return int(float(number) * 1024 ** _POWERS[unit.lower()])


def format_size(n_bytes: int) -> str:
    """``268435456`` -> ``256 MiB``: how limits appear in messages."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n_bytes >= 1024**power and n_bytes % 1024 ** (power - 1) == 0:
            value = n_bytes / 1024**power
            return f"{value:g} {unit}"
    return f"{n_bytes} B"


def expand_user(value: str, user: str) -> str:
    """Replace ``${user}`` with a name safe in Docker and Kubernetes object names."""
    safe = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-") or "user"
    return value.replace("${user}", safe)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True
    type: str = "bind"


@dataclass(frozen=True)
class TLSSettings:
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class DockerSettings:
    """How a Docker-backend config reaches its daemon and shapes its containers."""

    host: str | None = None
    tls: TLSSettings | None = None
    connect_address: str | None = None
    bind_address: str = "127.0.0.1"
    runtime: str | None = None
    gpus: str | int | tuple[str, ...] | None = None
    network: str | None = None
    user: str | None = None
    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None
    shm_size: int | None = None
    mounts: tuple[Mount, ...] = ()

    @property
    def is_remote(self) -> bool:
        return bool(self.host) and not self.host.startswith(("unix://", "npipe://"))

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], defaults: dict[str, Any] | None = None
    ) -> DockerSettings:
        """``defaults`` is the file's ``defaults.resources``: limits for configs without them."""
        resources_ = {**_default_limits(defaults), **data.get("resources", {})}
        gpus = data.get("gpus")
        return cls(
            host=data.get("host"),
            tls=TLSSettings(**data["tls"]) if "tls" in data else None,
            connect_address=data.get("connect_address"),
            bind_address=data.get("bind_address", "127.0.0.1"),
            runtime=data.get("runtime"),
            gpus=tuple(gpus) if isinstance(gpus, list) else gpus,
            network=data.get("network"),
            user=data.get("user"),
            memory=parse_size(resources_["memory"]) if "memory" in resources_ else None,
            cpus=resources_.get("cpus"),
            pids=resources_.get("pids"),
            shm_size=parse_size(resources_["shm_size"]) if "shm_size" in resources_ else None,
            mounts=tuple(Mount(**m) for m in data.get("mounts", [])),
        )


@dataclass(frozen=True)
class KubernetesSettings:
    """How a Kubernetes-backend config reaches its cluster and shapes its pods.

    Parsed once from the (validated) ``kubernetes:`` section; the pod's own objects
    (selectors, tolerations, affinity, the patch) stay the JSON the admin wrote.
    """

    context: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    #: the namespace, possibly with ``${user}``: see :meth:`namespace`
    namespace_template: str = "default"
    create_namespace: bool = False
    namespace_quota: dict[str, str] = field(default_factory=dict)
    namespace_limits: dict[str, dict[str, str]] = field(default_factory=dict)
    #: ``{"requests": {...}, "limits": {...}}``, quantities as strings
    resources: dict[str, dict[str, str]] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] = field(default_factory=dict)
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    shm_size: str | None = None
    grace_seconds: int = 5
    pod_patch: dict[str, Any] = field(default_factory=dict)
    #: a NetworkPolicy per pod, on unless turned off (a CNI that does not enforce them
    #: ignores them; one that does keeps other pods off the kernel ports)
    network_policy: bool = True
    #: CIDRs or NetworkPolicyPeers; empty: the address this server reaches the cluster from
    allow_from: tuple[str | dict[str, Any], ...] = ()

    def namespace(self, user: str) -> str:
        """The namespace a user's workloads go to (``${user}`` expanded)."""
        return expand_user(self.namespace_template, user)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KubernetesSettings:
        policy = data.get("network_policy", {})
        return cls(
            context=data.get("context"),
            kubeconfig=data.get("kubeconfig"),
            in_cluster=data.get("in_cluster", False),
            namespace_template=data.get("namespace", "default"),
            create_namespace=data.get("create_namespace", False),
            namespace_quota={k: str(v) for k, v in data.get("namespace_quota", {}).items()},
            namespace_limits={
                k: {n: str(q) for n, q in v.items()}
                for k, v in data.get("namespace_limits", {}).items()
            },
            resources={
                k: {n: str(q) for n, q in v.items()} for k, v in data.get("resources", {}).items()
            },
            node_selector=dict(data.get("node_selector", {})),
            tolerations=tuple(data.get("tolerations", ())),
            affinity=dict(data.get("affinity", {})),
            image_pull_secrets=tuple(data.get("image_pull_secrets", ())),
            image_pull_policy=data.get("image_pull_policy", "IfNotPresent"),
            service_account=data.get("service_account"),
            labels=dict(data.get("labels", {})),
            annotations=dict(data.get("annotations", {})),
            shm_size=str(data["shm_size"]) if data.get("shm_size") else None,
            grace_seconds=data.get("termination_grace_seconds", 5),
            pod_patch=dict(data.get("pod_patch", {})),
            network_policy=policy.get("enabled", True),
            allow_from=tuple(policy.get("allow_from", ())),
        )


@dataclass(frozen=True)
class BaseImageSpec:
    """A base image: built once per content hash (see :mod:`.images`)."""

    name: str
    from_image: str | None = None
    bootstrap: str | None = None
    suite: str = "bookworm"
    with_r: bool = False
    with_cuda: bool = False
    system_packages: tuple[str, ...] = ()
    python_packages: tuple[str, ...] = ()
    dockerfile_prepend: str = ""
    dockerfile_append: str = ""
    wheelhouse: str | None = None
    description: str = ""

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], defaults: dict[str, Any]) -> BaseImageSpec:
        return cls(
            name=name,
            from_image=data.get("from"),
            bootstrap=data.get("bootstrap"),
            suite=data.get("suite", defaults.get("debian_suite", "bookworm")),
            with_r=data.get("with_r", False),
            with_cuda=data.get("with_cuda", False),
            system_packages=tuple(data.get("system_packages", ())),
            python_packages=tuple(data.get("python_packages", ())),
            dockerfile_prepend=data.get("dockerfile_prepend", ""),
            dockerfile_append=data.get("dockerfile_append", ""),
            wheelhouse=data.get("wheelhouse", defaults.get("wheelhouse")),
            description=data.get("description", ""),
        )


@dataclass(frozen=True)
class CodeEnvSpec:
    """A code env: pinned packages layered on a config's base image, and optionally the
    pins of a Python environment it mirrors (:mod:`.images.mirror`)."""

    name: str
    packages: tuple[str, ...] = ()
    r_packages: tuple[str, ...] = ()
    available_for: str | tuple[str, ...] = ()
    description: str = ""
    #: ``True``: the server's own environment; a str: the absolute path of a requirements /
    #: ``pip freeze`` file; None: no mirror
    mirror: bool | str | None = None
    #: names left out of a mirror, on top of the built-in list (``images.mirror.EXCLUDED``)
    exclude: tuple[str, ...] = ()

    def is_available_for(self, config_name: str) -> bool:
        return self.available_for == "all" or config_name in self.available_for

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], source: str) -> CodeEnvSpec:
        available = data.get("available_for", "all")
        return cls(
            name=name,
            packages=tuple(data.get("packages", ())),
            r_packages=tuple(data.get("r_packages", ())),
            available_for=available if available == "all" else tuple(available),
            description=data.get("description", ""),
            mirror=_mirror_source(data.get("mirror"), source),
            exclude=tuple(data.get("exclude", ())),
        )


def _mirror_source(mirror: bool | str | None, source: str) -> bool | str | None:
    """``mirror: PATH`` relative to the config file's folder (``~`` expanded); ``false``
    is no mirror."""
    if mirror is None or mirror is False:
        return None
    if mirror is True:
        return True
    path = os.path.expanduser(mirror)
    if not os.path.isabs(path):
        path = os.path.join(os.path.dirname(os.path.abspath(source)), path)
    return os.path.normpath(path)


@dataclass(frozen=True)
class Permission:
    """Who may use one of the server's shared parts (``host_kernels``, ``terminals``): the
    same shape as a config's ``permissions`` and decided by the same check."""

    name: str
    label: str
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, name: str, label: str, data: dict[str, Any] | None) -> Permission:
        data = data or {}
        return cls(name, label, tuple(data.get("groups", ())), tuple(data.get("users", ())))


#: what the top-level permission keys open, in the words of a refusal
SHARED_PARTS = {
    "host_kernels": "host kernels (kernels and language servers that run on the Jupyter "
    "server itself, as its user)",
    "terminals": "terminals (a shell on the Jupyter server, as its user)",
}


@dataclass(frozen=True)
class ExecutionConfig:
    """A named place to run work: an image, a backend and who may use it."""

    name: str
    backend: str
    image: str
    description: str = ""
    registry: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    interrupt_mode: str = "signal"
    warm_pool_size: int = 0
    read_only_root: bool = False
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    #: "auto" (ipc sockets on a local daemon, else tcp), "ipc" or "tcp"
    transport: str = "auto"
    docker: DockerSettings = field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(
        cls, name: str, data: dict[str, Any], defaults: dict[str, Any] | None = None
    ) -> ExecutionConfig:
        """``defaults`` is the file's ``defaults`` section (default limits live there)."""
        permissions = data.get("permissions", {})
        return cls(
            name=name,
            backend=data["backend"],
            image=data["image"],
            description=data.get("description", ""),
            registry=data.get("registry"),
            env={k: str(v) for k, v in data.get("env", {}).items()},
            groups=tuple(permissions.get("groups", ())),
            users=tuple(permissions.get("users", ())),
            # Kubernetes has no signal API: its kernels interrupt by message
            interrupt_mode=data.get(
                "interrupt_mode", "message" if data["backend"] == "kubernetes" else "signal"
            ),
            warm_pool_size=data.get("warm_pool", {}).get("size", 0),
            read_only_root=data.get("read_only_root", False),
            # a warm pool's kernels start before anyone asks: they can mount nobody's files
            workspace=WorkspaceSettings.from_dict(
                data.get("workspace", {"mount": "none"} if data.get("warm_pool") else {})
            ),
            transport=data.get("transport", "auto"),
            docker=DockerSettings.from_dict(
                data.get("docker", {}), (defaults or {}).get("resources")
            ),
            kubernetes=KubernetesSettings.from_dict(data.get("kubernetes", {})),
            raw=data,
        )


@dataclass(frozen=True)
class ConfigFile:
    """The whole validated file: what every part of the product reads."""

    source: str
    execution_configs: dict[str, ExecutionConfig]
    base_images: dict[str, BaseImageSpec]
    code_envs: dict[str, CodeEnvSpec]
    groups: dict[str, tuple[str, ...]]
    defaults: dict[str, Any]
    #: who may use host kernels and terminals on a multi-user server (nobody by default)
    host_kernels: Permission = field(
        default_factory=lambda: Permission("host_kernels", SHARED_PARTS["host_kernels"])
    )
    terminals: Permission = field(
        default_factory=lambda: Permission("terminals", SHARED_PARTS["terminals"])
    )

    def get(self, name: str) -> ExecutionConfig:
        try:
            return self.execution_configs[name]
        except KeyError:
            known = ", ".join(sorted(self.execution_configs)) or "none"
            raise KeyError(
                f"no execution configuration named {name!r} in {self.source} (defined: {known})"
            ) from None

    def envs_for(self, config_name: str) -> list[CodeEnvSpec]:
        return [e for e in self.code_envs.values() if e.is_available_for(config_name)]

    def base_image_of(self, config: ExecutionConfig) -> BaseImageSpec | None:
        """The base image a config names, or None when it names an image reference."""
        return self.base_images.get(config.image)


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first defined on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@cache
def config_schema() -> dict[str, Any]:
    text = resources.files("jupyter_dss_containers.schema").joinpath("config.schema.json")
    return json.loads(text.read_text())


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config``, else ``$DSS_CONTAINERS_CONFIG``, else the Jupyter config path."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    for folder in jupyter_config_path():
        candidate = Path(folder) / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> ConfigFile:
    """Load, validate and build the config; the embedded default when no file is found.

    With a trusted launcher configured and no explicit path, the config is the launcher's
    (``GET /config``: only what the caller may use): such a server holds no config file.
    A file is parsed again only once it changed (see :mod:`.filecache`): while it does
    not, every caller gets the same object, which is therefore never to be modified.
    Blocking (a ``stat``, and a read after a change): callers on an event loop use a thread.
    """
    if path is None:
        from .backends.remote import launcher_config

        remote = launcher_config()
        if remote is not None:
            return remote
    found = find_config_path(path)
    if found is None:
        return _embedded_default()
    return _parsed_files.get(found)


@cache
def _embedded_default() -> ConfigFile:
    return parse_config(EMBEDDED_DEFAULT, EMBEDDED)


def read_document(path: str | os.PathLike[str] | None = None) -> tuple[Any, str]:
    """The parsed YAML document and its source name; the embedded default when no file."""
    found = find_config_path(path)
    if found is None:
        return EMBEDDED_DEFAULT, EMBEDDED
    source = str(found)
    return _document(_read_text(found, source), source)


def _read_text(found: Path, source: str) -> str:
    try:
        return found.read_text()
    except FileNotFoundError:
        raise ConfigError(source, [("", "file not found")]) from None
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror}")]) from None


def _document(text: str, source: str) -> tuple[Any, str]:
    """The YAML document in ``text``, checked for what YAML allows and nothing can use."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, [(where, f"invalid YAML: {exc.problem}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: its str() spans two lines
        before = text[: exc.position]
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        where = f"line {before.count(chr(10)) + 1}, column {len(before.rsplit(chr(10), 1)[-1]) + 1}"
        raise ConfigError(
            source, [(where, f"invalid YAML: character U+{code:04X} is not allowed")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("", f"invalid YAML: {exc}")]) from None
    if data is None:
        data = {}
    loop = _recursion(data, [])
    if loop is not None:
        raise ConfigError(
            source, [(_dotted(loop), "invalid YAML: an alias refers to a node that contains it")]
        )
    return data, source


def _parse_text(text: str, source: str) -> ConfigFile:
    return parse_config(*_document(text, source))


#: the config files read so far, each parsed again only once it changed
_parsed_files: ParsedFiles[ConfigFile] = ParsedFiles(_read_text, _parse_text, ConfigError)


def _recursion(value: Any, path: list[Any], inside: frozenset[int] = frozenset()) -> Any:
    """The path of a node that contains itself (``&a [*a]``), or None: nothing can use one."""
    if not isinstance(value, dict | list):
        return None
    if id(value) in inside:
        return path
    inside = inside | {id(value)}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        found = _recursion(item, [*path, key], inside)
        if found is not None:
            return found
    return None


def parse_config(data: Any, source: str) -> ConfigFile:
    """Validate a parsed document (file, API payload or embedded default) and build it."""
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top, got {_kind(data)}")])
    validator = jsonschema.Draft202012Validator(config_schema())
    problems = sorted(
        {(_dotted(e.absolute_path), _explain(e)) for e in _leaf_errors(validator.iter_errors(data))}
    )
    if problems:
        raise ConfigError(source, problems)
    # The embedded base image 'default' is always there unless the file redefines it.
    data = {
        **data,
        "base_images": {**EMBEDDED_DEFAULT["base_images"], **data.get("base_images", {})},
    }
    problems = _cross_check(data)
    if problems:
        raise ConfigError(source, problems)
    defaults = data.get("defaults", {})
    return ConfigFile(
        source=source,
        execution_configs={
            n: ExecutionConfig.from_dict(n, _gpu_default(c, data["base_images"]), defaults)
            for n, c in data.get("execution_configs", {}).items()
        },
        base_images={
            n: BaseImageSpec.from_dict(n, b, defaults)
            for n, b in data.get("base_images", {}).items()
        },
        code_envs={
            n: CodeEnvSpec.from_dict(n, e, source) for n, e in data.get("code_envs", {}).items()
        },
        groups={u: tuple(g) for u, g in data.get("groups", {}).items()},
        defaults=defaults,
        **{
            key: Permission.from_dict(key, label, data.get(key))
            for key, label in SHARED_PARTS.items()
        },
    )


def _default_limits(defaults: dict[str, Any] | None) -> dict[str, Any]:
    """The limits a Docker config without its own gets: the file's, else the built-in ones."""
    return {"memory": DEFAULT_MEMORY, "pids": DEFAULT_PIDS, **(defaults or {})}


def _gpu_default(config: dict[str, Any], base_images: dict[str, Any]) -> dict[str, Any]:
    """A Docker config on a ``with_cuda`` base image gets every GPU unless it sets ``gpus``."""
    docker = config.get("docker", {})
    cuda = (base_images.get(config["image"]) or {}).get("with_cuda", False)
    if config["backend"] != "docker" or not cuda or "gpus" in docker:
        return config
    return {**config, "docker": {**docker, "gpus": "all"}}


def _cross_check(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What a schema cannot say: names that must refer to other entries."""
    problems = []
    base_images = data.get("base_images", {})
    configs = data.get("execution_configs", {})
    for name, cfg in configs.items():
        image = cfg["image"]
        if image not in base_images and not re.search(r"[:/@]", image):
            defined = ", ".join(sorted(base_images)) or "none"
            problems.append(
                (
                    f"execution_configs.{name}.image",
                    f"{image!r} is neither a base image (defined: {defined}) "
                    "nor an image reference with a tag or registry (e.g. python:3.12-slim)",
                )
            )
        if cfg.get("read_only_root"):  # /tmp is then the config's own writable scratch
            for i, mount in enumerate(cfg.get("docker", {}).get("mounts", [])):
                if mount.get("target", "").rstrip("/") == "/tmp":
                    problems.append(
                        (
                            f"execution_configs.{name}.docker.mounts[{i}].target",
                            "expected a folder other than /tmp, the writable scratch of "
                            f"read_only_root (e.g. /data), got {mount['target']!r}",
                        )
                    )
        problems += _transport_problems(name, cfg)
        resources_ = cfg.get("docker", {}).get("resources", {})
        for key in ("memory", "shm_size"):
            if key not in resources_:
                continue
            if not _size_in_range(resources_[key]):
                problems.append(
                    (
                        f"execution_configs.{name}.docker.resources.{key}",
                        "expected at least 6m (Docker's minimum) and at most 1024Ti, "
                        f"got {resources_[key]!r}",
                    )
                )
    for env_name, env in data.get("code_envs", {}).items():
        if env.get("exclude") and env.get("mirror") in (None, False):
            problems.append(
                (
                    f"code_envs.{env_name}.exclude",
                    "expected only with mirror (true, or a requirements file): "
                    "it names packages a mirror leaves out",
                )
            )
        available = env.get("available_for", "all")
        for i, config_name in enumerate([] if available == "all" else available):
            if config_name not in configs:
                problems.append(
                    (
                        f"code_envs.{env_name}.available_for[{i}]",
                        f"no execution configuration named {config_name!r} "
                        f"(defined: {', '.join(sorted(configs)) or 'none'})",
                    )
                )
    template = data.get("defaults", {}).get("user_root")
    if template is not None and template_problem(template):
        problems.append(("defaults.user_root", f"{template_problem(template)}, got {template!r}"))
    default_memory = data.get("defaults", {}).get("resources", {}).get("memory")
    if default_memory is not None and not _size_in_range(default_memory):
        problems.append(
            (
                "defaults.resources.memory",
                "expected at least 6m (Docker's minimum) and at most 1024Ti, "
                f"got {default_memory!r}",
            )
        )
    for name, cfg in configs.items():
        pooled = cfg.get("warm_pool", {}).get("size", 0) > 0
        mount = cfg.get("workspace", {}).get("mount", "auto") if "workspace" in cfg else "none"
        if pooled and mount != "none":
            problems.append(
                (
                    f"execution_configs.{name}.workspace.mount",
                    "expected none with a warm_pool: pooled kernels start before anyone asks "
                    "for them, so they cannot mount a user's workspace",
                )
            )
    default = data.get("defaults", {}).get("execution_config")
    if default and default not in configs:
        problems.append(
            ("defaults.execution_config", f"no execution configuration named {default!r}")
        )
    return problems


def _size_in_range(value: int | str) -> bool:
    try:
        n_bytes = parse_size(value)
    except OverflowError:  # more digits than a float holds
        return False
    return 6 * 1024**2 <= n_bytes <= _MAX_BYTES


def _transport_problems(name: str, cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """ipc sockets need a daemon on this host; a TCP kernel needs a network to be reached."""
    transport = cfg.get("transport", "auto")
    docker = cfg.get("docker", {})
    host = docker.get("host", "")
    remote = cfg["backend"] != "docker" or (bool(host) and not host.startswith("unix://"))
    where = f"execution_configs.{name}.transport"
    if transport == "ipc" and remote:
        on = "Kubernetes" if cfg["backend"] != "docker" else f"the daemon at {host}"
        return [
            (
                where,
                f"expected 'tcp' or 'auto': ipc sockets need a Docker or Podman daemon on "
                f"this host (a unix:// socket), and this config runs on {on}",
            )
        ]
    if docker.get("network") == "none" and (transport == "tcp" or remote):
        return [
            (
                where,
                "expected 'ipc' or 'auto' on a local daemon: with docker.network 'none' "
                "a kernel on tcp cannot be reached",
            )
        ]
    return []


# --------------------------------------------------------------------------- messages


def _leaf_errors(errors: Any) -> list[jsonschema.ValidationError]:
    """Keep the most specific errors: a wrong field deep down, not 'the root is invalid'."""
    out = []
    for error in errors:
        if error.validator in ("anyOf", "oneOf") and error.context and not _is_exclusive(error):
            deepest = max(len(e.absolute_path) for e in error.context)
            if deepest > len(error.absolute_path):
                out.extend(
                    _leaf_errors(e for e in error.context if len(e.absolute_path) == deepest)
                )
                continue
        out.append(error)
    return out


def _is_exclusive(error: jsonschema.ValidationError) -> bool:
    return error.validator == "oneOf" and "from" in json.dumps(error.validator_value)


def _dotted(path: Any) -> str:
    out = ""
    for part in path:
        if not isinstance(part, int) and not str(part).isprintable():
            part = repr(part)  # a key with a line break or control character, shown quoted
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _kind(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "nothing (null)",
    }
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value, default=str)[:60]})"


def _explain(error: jsonschema.ValidationError) -> str:
    """One line a person can act on, for one schema violation."""
    schema, value, kind = error.schema, error.instance, error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed), key=str) if isinstance(value, dict) else []
        names = ", ".join(repr(e) for e in extra)
        return f"unknown key {names} (expected one of: {', '.join(allowed)})"
    if kind == "required":
        return f"missing required key {error.message.split(' ')[0]}"
    if kind == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"expected {wanted}, got {_kind(value)}"
    if kind == "enum":
        return f"expected one of {', '.join(map(repr, error.validator_value))}, got {value!r}"
    if kind == "const":
        return f"expected {error.validator_value!r}, got {value!r}"
    if "propertyNames" in error.absolute_schema_path:
        description = schema.get("description") or "a valid name"
        return f"invalid name {value!r}: expected {description}"
    if kind == "pattern":
        description = schema.get("description") or f"matching {error.validator_value}"
        return f"expected {description}, got {value!r}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        word = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"expected a number {word[kind]} {error.validator_value}, got {value!r}"
    if kind == "minLength":
        return "expected a non-empty string"
    if kind == "oneOf" and _is_exclusive(error):
        return "expected exactly one of 'from' (an image to build on) or 'bootstrap: debian'"
    if kind == "not":
        other = "kubernetes" if "kubernetes" in json.dumps(error.validator_value) else "docker"
        return f"a '{other}' section does not belong to a config whose backend is not {other}"
    if kind == "anyOf" and "description" in schema:
        return f"expected {schema['description']}, got {_kind(value)}"
    return error.message
