"""The arguments a workload's container is created with, built by pure functions from
plain arguments: the config, the workload's spec (its workspace plan and transport folder
in it), the user it runs as, the image's HOME and the network to join.

Nothing here reads a file, a socket or the daemon: the backend inspects the image and
finds the network, then calls these. :func:`create_args` is what goes to the SDK's
``APIClient.create_container``, whose body the daemon receives as is (its ``HostConfig``
is built here, for the daemon's API version).

The promises they keep: every capability dropped and none added, no privilege and no new
privileges, an init process, a non-root numeric user, the config's limits (memory without
swap, CPUs, pids, shm), a read-only root with /tmp and HOME writable when asked, ports
published only on the config's bind address (none on the ipc transport, none on the host
network), the workspace at its own path (read-only when the plan says so) and the
kernel's transport folder at its target.
"""

from __future__ import annotations

from typing import Any

from docker.types import DeviceRequest, HostConfig, Mount

from ...config import DockerSettings, ExecutionConfig
from ...imagecontract import IMAGE_HOME, IMAGE_USER
from ...ownership import PREFIX
from ...workspace import WorkspacePlan
from ..base import WorkloadSpec
from .gpus import GPU_IDS

DEFAULT_USER = IMAGE_USER  # the base images' user, for images whose user is not numeric
READ_ONLY_HOME = IMAGE_HOME  # HOME of the base images, for images that set none
#: an anonymous volume (not a tmpfs) at /tmp under a read-only root: private files are
#: copied in before the start and job results read after the exit (a tmpfs exists only
#: while the container runs); it is removed with the container (``remove(v=True)``)
TMP = "/tmp"
#: a container's memory limit in bytes, which placement over several daemons adds up
MEMORY_LIMIT = PREFIX + "memory-limit"


# --------------------------------------------------------------------------- the image


def image_user(image_attrs: dict[str, Any]) -> str:
    """The image's user if it is numeric and not root, else the base images' user."""
    user = (image_attrs.get("Config") or {}).get("User") or ""
    uid = user.split(":")[0]
    return user if uid.isdigit() and uid != "0" else DEFAULT_USER


def image_home(image_attrs: dict[str, Any]) -> str:
    """HOME as the image sets it (the base images' home when it sets none)."""
    env = (image_attrs.get("Config") or {}).get("Env") or []
    homes = [e.split("=", 1)[1] for e in env if e.startswith("HOME=")]
    return homes[-1] if homes and homes[-1].startswith("/") else READ_ONLY_HOME


# --------------------------------------------------------------------------- who and where


def mounted_plan(spec: WorkloadSpec) -> WorkspacePlan | None:
    """The spec's workspace plan when it mounts the user's files, else None."""
    plan = spec.workspace
    return plan if plan is not None and plan.mounted else None


def container_user(settings: DockerSettings, wanted: str | None, image: str | None) -> str:
    """The config's user, else ``wanted`` (the workspace owner's), else ``image`` (the
    image's numeric non-root user, :func:`image_user`), else 1000:100."""
    return settings.user or wanted or image or DEFAULT_USER


def needs_image_user(settings: DockerSettings, spec: WorkloadSpec) -> bool:
    """Whether :func:`container_user` needs the image's user (an image inspect)."""
    plan = mounted_plan(spec)
    return not settings.user and not (plan and plan.user)


def writable_home(config: ExecutionConfig, spec: WorkloadSpec, home: str | None) -> str | None:
    """The HOME that gets a tmpfs of its own under a read-only root (None: no tmpfs).

    A HOME inside the mounted workspace is the user's own already.
    """
    if not config.read_only_root or not home:
        return None
    plan = mounted_plan(spec)
    if plan and (home + "/").startswith(plan.root.rstrip("/") + "/"):  # type: ignore[union-attr]
        return None
    return home


def container_env(config: ExecutionConfig, spec: WorkloadSpec, user: str) -> dict[str, str]:
    """The spec's environment; HOME=/tmp for a workspace owner's uid on a writable root.

    A user other than the image's owns nothing at the image's HOME: the container's own
    /tmp serves (a tmpfs with a uid is not portable: Podman 4).
    """
    env = dict(spec.env)
    plan = mounted_plan(spec)
    if plan is not None and user == plan.user and not config.read_only_root:
        env.setdefault("HOME", TMP)
    return env


def gpu_request(gpus: str | int | tuple[str, ...]) -> DeviceRequest:
    """``--gpus all``, ``--gpus 2`` or ``--gpus device=0,1`` as a device request."""
    if gpus == "all":
        return DeviceRequest(count=-1, capabilities=[["gpu"]])
    if isinstance(gpus, int):
        return DeviceRequest(count=gpus, capabilities=[["gpu"]])
    return DeviceRequest(device_ids=list(gpus), capabilities=[["gpu"]])


def device_ids(settings: DockerSettings, allocated: tuple[str, ...]) -> tuple[str, ...]:
    """The GPU ids a container holds: those allocated to it (``gpus: N``) or the config's
    own list; none for ``all`` (Docker's choice, not counted)."""
    if settings.allocates_gpus:
        return allocated
    return settings.gpus if isinstance(settings.gpus, tuple) else ()


def gpu_labels_env(
    settings: DockerSettings, allocated: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, environment) that record and pass a container's GPU ids: every server on
    the daemon reads the label; the nvidia runtime reads NVIDIA_VISIBLE_DEVICES, which is
    always set (over the image's and the caller's): CUDA images set it to ``all``, and a
    daemon whose default runtime is nvidia would then give every GPU to any container of
    them. ``void`` is NVIDIA's "no GPU" value."""
    ids = device_ids(settings, allocated)
    if not ids:
        return {}, {"NVIDIA_VISIBLE_DEVICES": "all" if settings.gpus == "all" else "void"}
    joined = ",".join(ids)
    return {GPU_IDS: joined}, {"NVIDIA_VISIBLE_DEVICES": joined}


# --------------------------------------------------------------------------- the container


def published_ports(settings: DockerSettings, spec: WorkloadSpec) -> dict[str, Any]:
    """``{"41000/tcp": (bind address, host port or None)}``; none on the host network."""
    if not spec.ports or settings.network == "host":
        return {}
    return {f"{p}/tcp": (settings.bind_address, spec.host_ports.get(p)) for p in spec.ports}


def mounts(config: ExecutionConfig, spec: WorkloadSpec) -> list[Mount]:
    """The config's mounts, /tmp under a read-only root, the workspace at its own path and
    the transport folder at its target."""
    found = [
        Mount(target=m.target, source=m.source, type=m.type, read_only=m.read_only)
        for m in config.docker.mounts
    ]
    if config.read_only_root:
        found.append(Mount(target=TMP, source=None))
    plan = mounted_plan(spec)
    if plan is not None and plan.source:
        found.append(
            Mount(target=plan.root, source=plan.source, type="bind", read_only=plan.read_only)
        )
    if spec.host_folder:
        found.append(Mount(target=spec.host_folder_target, source=spec.host_folder, type="bind"))
    return found


def host_config_args(
    config: ExecutionConfig,
    spec: WorkloadSpec,
    user: str,
    home: str | None = None,
    network: str | None = None,
    gpu_ids: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The host settings as keyword arguments of ``HostConfig`` (and of the SDK's
    ``containers.create``); ``home`` gets a private tmpfs, ``network`` is joined when the
    config names none, ``gpu_ids`` are the GPUs allocated to a ``gpus: N`` config."""
    s = config.docker
    args: dict[str, Any] = {
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
    }
    if config.read_only_root:
        args["read_only"] = True
    if home:
        uid, _, gid = user.partition(":")
        args["tmpfs"] = {home: f"rw,nosuid,nodev,uid={uid},gid={gid or uid},mode=0700"}
    if s.memory:
        args["mem_limit"] = s.memory
        args["memswap_limit"] = s.memory  # no swap: the limit is the limit
    if s.cpus:
        args["nano_cpus"] = int(s.cpus * 1e9)
    if s.pids:
        args["pids_limit"] = s.pids
    if s.shm_size:
        args["shm_size"] = s.shm_size
    if s.runtime:
        args["runtime"] = s.runtime
    if s.gpus is not None and s.gpu_request == "device_request":
        ids = device_ids(s, gpu_ids)
        args["device_requests"] = [gpu_request(ids or s.gpus)]
    if s.network or network:
        args["network_mode"] = s.network or network
    if ports := published_ports(s, spec):
        args["port_bindings"] = ports
    if found := mounts(config, spec):
        args["mounts"] = found
    return args


def create_args(
    config: ExecutionConfig,
    spec: WorkloadSpec,
    *,
    api_version: str,
    user: str,
    image_home: str | None = None,
    network: str | None = None,
    gpu_ids: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Keyword arguments of ``APIClient.create_container`` for the workload.

    ``user`` comes from :func:`container_user`; ``image_home`` (:func:`image_home`) is
    needed under a read-only root only; ``network`` is the isolated network, used when the
    config names none; ``gpu_ids`` the GPUs allocated to it (``gpus: N``). Its labels also
    record its memory limit, which placement over several daemons adds up.
    """
    if config.docker.allocates_gpus and len(gpu_ids) != config.docker.gpus:
        raise ValueError(f"gpus: {config.docker.gpus} needs as many allocated ids, got {gpu_ids}")
    home = writable_home(config, spec, image_home)
    host = host_config_args(config, spec, user, home, network, gpu_ids)
    plan = mounted_plan(spec)
    gpu_labels, gpu_env = gpu_labels_env(config.docker, gpu_ids)
    labels = {**spec.labels, **gpu_labels}
    if config.docker.memory:
        labels[MEMORY_LIMIT] = str(config.docker.memory)
    args: dict[str, Any] = {
        "image": spec.image,
        "command": spec.command,
        "name": spec.name,
        "labels": labels,
        "environment": {**container_env(config, spec, user), **gpu_env},
        "user": user,
        "working_dir": spec.working_dir or (plan.working_dir if plan else None),
        "detach": True,
        "host_config": HostConfig(version=api_version, **host),
    }
    if "port_bindings" in host:
        args["ports"] = [tuple(p.split("/", 1)) for p in host["port_bindings"]]
    return args
