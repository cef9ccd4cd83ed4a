"""The model of a validated config file: frozen, typed, what every consumer reads.

Each class's ``from_dict`` builds it from its (already validated) section of the file;
validation and the cross-checks a schema cannot express are in :mod:`.parse`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..workspace import WorkspaceSettings
from .cuda import cuda_version_text
from .defaults import default_limits
from .units import expand_user, parse_size


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


def daemon_reach(host: str | None) -> str:
    """How a Docker daemon address is reached, the one answer the config checks, the
    transport and the backends share: ``unix`` (a socket of this host, also what no address
    means), ``npipe`` (a Windows named pipe of this host) or ``network`` (``tcp://``,
    ``ssh://``: another host, perhaps). Only ``unix`` can share ipc sockets and folders."""
    if not host or host.startswith("unix://"):
        return "unix"
    if host.startswith("npipe://"):
        return "npipe"
    return "network"


#: the keys of a ``docker.hosts`` entry that say how that daemon is reached
HOST_KEYS = ("host", "tls", "connect_address", "bind_address", "runtime")


@dataclass(frozen=True)
class DockerHost:
    """One daemon of a config over several (``docker.hosts``): its name (in labels and
    messages), its settings (the config's, with this daemon's address) and the memory this
    product may use there (None: the daemon's total, from ``docker info``)."""

    name: str
    settings: DockerSettings
    memory: int | None = None


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
    #: how allocated GPU ids reach the container: ``device_request`` or ``env`` (only
    #: NVIDIA_VISIBLE_DEVICES, for the nvidia runtime's legacy mode)
    gpu_request: str = "device_request"
    #: ``queue`` (wait for ``gpu_wait`` seconds) or ``refuse`` when ``gpus: N`` finds fewer free
    gpu_on_busy: str = "queue"
    gpu_wait: float = 600.0
    #: the throw-away container listing the daemon's GPUs (image None: the config's image)
    gpu_probe_image: str | None = None
    gpu_probe_command: tuple[str, ...] = ("nvidia-smi", "-L")
    #: several daemons (``docker.hosts``): each start goes to the one with room
    hosts: tuple[DockerHost, ...] = ()

    @property
    def is_remote(self) -> bool:
        """On another host (not a socket or named pipe of this one); a config over several
        daemons is remote when one of them is (``host`` is then that one)."""
        return daemon_reach(self.host) == "network"

    @property
    def allocates_gpus(self) -> bool:
        """``gpus: N``: N free GPUs of the daemon, by explicit device ids."""
        return isinstance(self.gpus, int) and not isinstance(self.gpus, bool)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], defaults: dict[str, Any] | None = None
    ) -> DockerSettings:
        """``defaults`` is the file's ``defaults.resources``: limits for configs without them."""
        resources_ = {**default_limits(defaults), **data.get("resources", {})}
        gpus = data.get("gpus")
        queue, probe = data.get("gpu_queue", {}), data.get("gpu_probe", {})
        hosts = tuple(
            DockerHost(
                name=entry.get("name") or f"host{i + 1}",
                settings=cls.from_dict(
                    {
                        **{k: v for k, v in data.items() if k not in ("hosts", *HOST_KEYS)},
                        **{k: entry[k] for k in HOST_KEYS if k in entry},
                    },
                    defaults,
                ),
                memory=parse_size(entry["memory"]) if "memory" in entry else None,
            )
            for i, entry in enumerate(data.get("hosts", ()))
        )
        host = data.get("host")
        if hosts:  # the one the transport and workspace checks look at: a remote one first
            remote = [h for h in hosts if h.settings.is_remote]
            host = (remote or hosts)[0].settings.host
        return cls(
            host=host,
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
            gpu_request=data.get("gpu_request", "device_request"),
            gpu_on_busy=queue.get("on_busy", "queue"),
            gpu_wait=float(queue.get("timeout", 600)),
            gpu_probe_image=probe.get("image"),
            gpu_probe_command=tuple(probe.get("command", ("nvidia-smi", "-L"))),
            hosts=hosts,
        )


def per_host(config: ExecutionConfig) -> list[ExecutionConfig]:
    """A config over several daemons as one config per daemon, named ``config@host`` (what
    ``doctor`` checks); any other config as itself."""
    import dataclasses

    if config.backend != "docker" or not config.docker.hosts:
        return [config]
    return [
        dataclasses.replace(config, name=f"{config.name}@{h.name}", docker=h.settings)
        for h in config.docker.hosts
    ]


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
    #: seconds a pod may take to be scheduled and run; when set it wins over the caller's
    #: (``ContainerProvisioner.launch_timeout`` for kernels) and is also the wait for a
    #: node an autoscaler adds; None: the caller's, and 600 s once a node is coming
    start_timeout: float | None = None
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
            start_timeout=data.get("start_timeout"),
            pod_patch=dict(data.get("pod_patch", {})),
            network_policy=policy.get("enabled", True),
            allow_from=tuple(policy.get("allow_from", ())),
        )


@dataclass(frozen=True)
class BaseImageSpec:
    """A base image: built once per content hash (see :mod:`jupyter_dss_containers.images`)."""

    name: str
    from_image: str | None = None
    bootstrap: str | None = None
    suite: str = "bookworm"
    with_r: bool = False
    with_cuda: bool = False
    #: the CUDA wheels of a bootstrapped ``with_cuda`` image (:mod:`..cudasets`; None: default)
    cuda_version: str | None = None
    cuda_libraries: str | tuple[str, ...] | None = None
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
            cuda_version=cuda_version_text(data.get("cuda_version")),
            cuda_libraries=_libraries(data.get("cuda_libraries")),
            system_packages=tuple(data.get("system_packages", ())),
            python_packages=tuple(data.get("python_packages", ())),
            dockerfile_prepend=data.get("dockerfile_prepend", ""),
            dockerfile_append=data.get("dockerfile_append", ""),
            wheelhouse=data.get("wheelhouse", defaults.get("wheelhouse")),
            description=data.get("description", ""),
        )


def _libraries(value: str | list[str] | None) -> str | tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class CodeEnvSpec:
    """A code env: pinned packages layered on a config's base image, and optionally the
    pins of a Python environment it mirrors (:mod:`jupyter_dss_containers.images.mirror`)."""

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
    #: job runners started ahead of time (``warm_pool: {jobs: N}``, see jobs/pool.py)
    warm_pool_jobs: int = 0
    read_only_root: bool = False
    workspace: WorkspaceSettings = field(default_factory=WorkspaceSettings)
    #: "auto" (ipc sockets on a local daemon, else tcp), "ipc" or "tcp"
    transport: str = "auto"
    docker: DockerSettings = field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def on_remote_daemon(self) -> bool:
        """A Docker config whose daemon is on another host: it sees none of our folders."""
        return self.backend == "docker" and self.docker.is_remote

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
            warm_pool_jobs=data.get("warm_pool", {}).get("jobs", 0),
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
