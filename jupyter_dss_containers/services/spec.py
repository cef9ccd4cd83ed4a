"""What a model service is made of on Docker, built by pure functions: names, labels, the
files its volumes hold, the create arguments of its replicas and router, the router config.

Nothing here talks to a daemon (:mod:`.engine` does). The promises kept here: every
container non-root (the image's user, 1000:100), all capabilities dropped, no new
privileges, a read-only root, an init process; the model volume mounted read-only in the
replicas; no port published but the router's, on the config's bind address; no Jupyter
token or kernel key in any environment (the router's admin token is the service's own).
"""

from __future__ import annotations

import hashlib
import io
import re
import secrets
import tarfile
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..config import ExecutionConfig
from ..imagecontract import IMAGE_USER, KERNEL_PYTHON
from ..ownership import CONFIG, HOST, HOST_UID, KIND, OWNER, PREFIX

#: replicas run the model server, the router fronts them; neither carries the ``managed``
#: label, so ``cleanup`` and the start-up reaper (which list ``managed=true``) never reap
#: them: a service outlives the server that deployed it
REPLICA, ROUTER = "service-replica", "service-router"
SERVICE = PREFIX + "service"
SERVICE_ID = PREFIX + "service-id"
VERSION = PREFIX + "service-version"
REPLICA_INDEX = PREFIX + "replica"
ROUTER_PORT_LABEL = PREFIX + "router-port"
MOUNT = "/srv/dss"
PORT = 8080
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
VERSION_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,29}$")
RUNTIME_FILES = ("__init__.py", "protocol.py", "runtime.py", "router.py")
MAX_REPLICAS = 16


class SpecError(ValueError):
    """A name, version or count a client can fix (a 400)."""


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpecError(
            f"a service name is 1-40 lower-case letters, digits and '-', starting with a "
            f"letter or digit, not {str(name)[:60]!r}"
        )
    return name


def check_version(version: Any) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise SpecError(
            f"a version is 1-30 lower-case letters, digits and '-' (a DNS label), not "
            f"{str(version)[:40]!r}"
        )
    return version


def check_replicas(replicas: Any) -> int:
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 1 <= replicas <= MAX_REPLICAS
    ):
        raise SpecError(
            f"replicas must be a whole number from 1 to {MAX_REPLICAS}, not {replicas!r}"
        )
    return replicas


def check_traffic(traffic: Any, versions: set[str]) -> dict[str, float]:
    """``{version: weight}`` over known versions, weights >= 0 summing to more than 0."""
    if not isinstance(traffic, dict) or not traffic:
        raise SpecError("traffic must be an object {version: weight}")
    unknown = sorted(set(traffic) - versions)
    if unknown:
        raise SpecError(
            f"traffic names unknown version(s) {unknown} (versions: {sorted(versions)})"
        )
    for v, w in traffic.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 1e6:
            raise SpecError(f"traffic[{v!r}] must be a number >= 0, not {w!r}")
    if sum(traffic.values()) <= 0:
        raise SpecError("traffic weights must not all be 0")
    return {v: float(traffic.get(v, 0)) for v in sorted(versions)}


def service_id(owner: str, name: str) -> str:
    """A daemon-safe id, one per (owner, name): two users may both have ``iris``."""
    return hashlib.sha256(f"{owner}\0{name}".encode()).hexdigest()[:12]


def network_name(sid: str) -> str:
    return f"dss-svc-{sid}"


def volume_name(sid: str, version: str | None) -> str:
    return f"dss-svc-{sid}-v-{version}" if version else f"dss-svc-{sid}-router"


def replica_name(sid: str, version: str, index: int) -> str:
    return f"dss-svc-{sid}-v-{version}-{index}"


def router_name(sid: str) -> str:
    return f"dss-svc-{sid}-router"


def labels(
    kind: str,
    owner: str,
    name: str,
    config: str,
    version: str | None = None,
    index: int | None = None,
) -> dict[str, str]:
    import os
    import socket

    found = {
        KIND: kind,
        SERVICE: name,
        SERVICE_ID: service_id(owner, name),
        OWNER: owner,
        CONFIG: config,
        HOST: socket.gethostname(),
        HOST_UID: str(os.getuid()),
    }
    if version is not None:
        found[VERSION] = version
    if index is not None:
        found[REPLICA_INDEX] = str(index)
    return found


# --------------------------------------------------------------------------- files


def runtime_sources() -> dict[str, bytes]:
    """This package's serving files, to run in the container as ``dss_serving``."""
    package = resources.files(__package__)
    return {
        f"dss_serving/{n}": (package / n).read_bytes() if n != "__init__.py" else b""
        for n in RUNTIME_FILES
    }


def volume_tar(files: dict[str, bytes], writable: tuple[str, ...] = ()) -> bytes:
    """A tar of read-only files (0444) and ``writable`` folders owned by the image's user."""
    uid, gid = (int(x) for x in IMAGE_USER.split(":"))
    now = int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted({p.rsplit("/", 1)[0] for p in files if "/" in p})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o555, now
            tar.addfile(info)
        for folder in writable:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.uid, info.gid, info.mtime = (
                tarfile.DIRTYPE,
                0o700,
                uid,
                gid,
                now,
            )
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), 0o444, now
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --------------------------------------------------------------------------- containers


def _hardened(config: ExecutionConfig) -> dict[str, Any]:
    """Host settings every service container gets, with the config's limits."""
    s = config.docker
    args: dict[str, Any] = {
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,nosuid,nodev,size=64m"},
        "restart_policy": {"Name": "always"},
    }
    if s.memory:
        args["mem_limit"] = s.memory
        args["memswap_limit"] = s.memory
    if s.cpus:
        args["nano_cpus"] = int(s.cpus * 1e9)
    args["pids_limit"] = s.pids or 256
    if s.runtime:
        args["runtime"] = s.runtime
    return args


def replica_args(
    config: ExecutionConfig, image: str, owner: str, name: str, version: str, index: int
) -> dict[str, Any]:
    """Keyword arguments of the SDK's ``containers.create`` for one replica."""
    sid = service_id(owner, name)
    return {
        "image": image,
        "name": replica_name(sid, version, index),
        "command": [KERNEL_PYTHON, "-m", "dss_serving.runtime"],
        "user": config.docker.user or IMAGE_USER,
        "working_dir": MOUNT,
        "labels": labels(REPLICA, owner, name, config.name, version, index),
        "environment": {
            "PYTHONPATH": MOUNT,
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": "1",
            "DSS_SERVICE_NAME": name,
            "DSS_SERVICE_VERSION": version,
            "DSS_MODEL_DIR": f"{MOUNT}/model",
        },
        "network": network_name(sid),
        "volumes": {volume_name(sid, version): {"bind": MOUNT, "mode": "ro"}},
        **_hardened(config),
    }


def router_args(
    config: ExecutionConfig,
    image: str,
    owner: str,
    name: str,
    admin_token: str,
    host_port: int | None = None,
) -> dict[str, Any]:
    """The router's: its state volume read-write, its port published on the bind address."""
    sid = service_id(owner, name)
    return {
        "image": image,
        "name": router_name(sid),
        "command": [KERNEL_PYTHON, "-m", "dss_serving.router"],
        "user": config.docker.user or IMAGE_USER,
        "working_dir": MOUNT,
        "labels": labels(ROUTER, owner, name, config.name),
        "environment": {
            "PYTHONPATH": MOUNT,
            "PYTHONDONTWRITEBYTECODE": "1",
            "DSS_ROUTER_STATE": f"{MOUNT}/state",
            "DSS_ROUTER_ADMIN_TOKEN": admin_token,
        },
        "network": network_name(sid),
        "volumes": {volume_name(sid, None): {"bind": MOUNT, "mode": "rw"}},
        "ports": {f"{PORT}/tcp": (config.docker.bind_address, host_port)},
        **_hardened(config),
    }


def router_outside_network(config: ExecutionConfig) -> str:
    """Where the router's port is published from: the config's network, else the default
    bridge (the service network is internal: no port is published from it)."""
    return config.docker.network or "bridge"


def replica_address(sid: str, version: str, index: int) -> str:
    """How the router reaches a replica: its name on the service's network."""
    return f"{replica_name(sid, version, index)}:{PORT}"


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class VersionSpec:
    version: str
    replicas: int
    weight: float


def router_config(
    name: str, sid: str, versions: list[VersionSpec], key_hashes: list[str]
) -> dict[str, Any]:
    """What the router serves: each version's weight and replica addresses, the key hashes."""
    return {
        "service": name,
        "versions": {
            v.version: {
                "weight": v.weight,
                "replicas": [replica_address(sid, v.version, i) for i in range(v.replicas)],
            }
            for v in versions
        },
        "keys": list(key_hashes),
    }


def new_api_key() -> str:
    return "dss_" + secrets.token_urlsafe(24)


def new_admin_token() -> str:
    return secrets.token_urlsafe(32)
