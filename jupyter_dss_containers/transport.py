"""How the server reaches a kernel: ZeroMQ ipc sockets in a private folder, or TCP.

On a Docker or Podman daemon of this host (a ``unix://`` socket) a kernel binds its five
channels as ipc sockets in a folder of its own, bind-mounted into its container: no port is
published, no docker-proxy runs, nothing listens where another local user or container could
dial. The folder (mode 0700, owned by the container's user so that the kernel can bind and
rewrite its connection file there) lies in a private parent (mode 0700, the server's) in the
Jupyter runtime folder, so no other user of the host can even reach it; the connection file
is written there too, instead of being copied into the container. Elsewhere (a remote daemon,
Kubernetes) the kernel listens on TCP, encrypted with CurveZMQ where its image supports it.

The folder's path is in a label of its container, so whoever removes a kernel container
(its provisioner, the warm pool, the reaper, ``cleanup``) removes its folder as well.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from .config import ExecutionConfig, daemon_reach
from .imagecontract import KERNEL_FOLDER as KERNEL_FOLDER
from .ownership import PREFIX, this_process

#: where the kernel's folder is mounted in its container (the connection file is in it)
#: the sockets are ``<folder>/k-1`` ... ``<folder>/k-5`` (jupyter_client's ``<ip>-<port>``)
SOCKET_STEM = "k"
IPC_PORTS = (1, 2, 3, 4, 5)
#: label naming a kernel container's folder on the host
FOLDER_LABEL = PREFIX + "kernel-folder"
PARENT_NAME = "dss-kernels"
#: sun_path holds 108 bytes with its terminating NUL
MAX_SOCKET_PATH = 107
#: a kernel folder's name: 128 random bits. A kernel can learn its own folder's host path
#: (its mount table) and could replace its socket files with links for the server to follow
#: when it reconnects; another kernel's sockets it cannot name.
_FOLDER_NAME = re.compile(r"[0-9a-f]{32}")
_PROCESS_NAME = re.compile(r"[0-9a-f]{8}")


class TransportError(OSError):
    """The kernel's folder cannot be made or handed to the container's user."""


def is_local_daemon(config: ExecutionConfig) -> bool:
    """A Docker or Podman daemon on a Unix socket of this host: it can mount our folders."""
    if config.backend != "docker":
        return False
    from .backends.docker import daemon_url

    return daemon_reach(daemon_url(config.docker)) == "unix"


def resolve(config: ExecutionConfig) -> str:
    """``ipc`` or ``tcp`` for a config: ``auto`` is ipc on a local daemon, tcp elsewhere."""
    if config.transport != "auto":
        return config.transport
    return "ipc" if is_local_daemon(config) else "tcp"


def ipc_ip(folder: str) -> str:
    """The ``ip`` of an ipc connection: jupyter_client dials ``<ip>-<port>``."""
    return f"{folder}/{SOCKET_STEM}"


# --------------------------------------------------------------------------- folders


def _parents() -> list[Path]:
    """Where kernel folders may live: the Jupyter runtime folder, else the temp folder
    (when the runtime folder's path is too long for a socket path)."""
    from jupyter_core.paths import jupyter_runtime_dir

    return [
        Path(jupyter_runtime_dir()) / PARENT_NAME,
        Path(tempfile.gettempdir()) / f"{PARENT_NAME}-{os.geteuid()}",
    ]


def _process_name() -> str:
    return this_process().server_id[-8:]


def _longest_socket(parent: Path) -> int:
    return len(os.fsencode(parent / _process_name() / ("0" * 32) / f"{SOCKET_STEM}-5"))


def _private_dir(path: Path) -> None:
    """Make ``path`` (if needed) a real folder of ours, mode 0700; refuse anything else."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise TransportError(
            f"{path} is not a folder owned by uid {os.geteuid()}: kernel sockets cannot be "
            "kept private there"
        )
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def new_folder() -> str:
    """A fresh private folder for one kernel (blocking: call it in a worker thread)."""
    why = []
    for parent in _parents():
        if _longest_socket(parent) > MAX_SOCKET_PATH:
            why.append(f"{parent}: too long for a Unix socket path ({MAX_SOCKET_PATH} bytes)")
            continue
        try:
            parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _private_dir(parent)
            process = parent / _process_name()
            _private_dir(process)
            folder = process / secrets.token_hex(16)
            folder.mkdir(mode=0o700)
        except OSError as exc:
            why.append(f"{parent}: {exc.strerror or exc}")
            continue
        return str(folder)
    raise TransportError(f"no private folder for the kernel's sockets: {'; '.join(why)}")


def prepare_folder(folder: str, user: str, files: dict[str, bytes]) -> None:
    """Give the folder to the container's user (``uid[:gid]``) and write ``files`` (name ->
    bytes, mode 0600) into it; blocking. The kernel may have left anything in a reused folder
    (a restart): nothing here follows a link it could have planted."""
    uid_text, _, gid_text = user.partition(":")
    uid, gid = int(uid_text), int(gid_text or uid_text)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or not is_kernel_folder(folder):
        raise TransportError(f"{folder} is not a kernel folder")
    try:
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(folder, uid, gid, follow_symlinks=False)
    except PermissionError:
        raise TransportError(
            f"cannot give the kernel's socket folder to uid {uid} (the container's user) as "
            f"uid {os.geteuid()}: run the containers as this server's user (docker.user) or "
            "use transport: tcp"
        ) from None
    os.chmod(folder, 0o700)
    for name, content in files.items():
        _write_private(folder, name, content, uid, gid)


def _write_private(folder: str, name: str, content: bytes, uid: int, gid: int) -> None:
    """A new file under a random name (no link followed), then renamed over ``name``."""
    if "/" in name or name in ("", ".", ".."):
        raise TransportError(f"not a file name: {name!r}")
    scratch = os.path.join(folder, f".{name}.{secrets.token_hex(4)}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        if os.geteuid() == 0 or (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.rename(scratch, os.path.join(folder, name))


def is_kernel_folder(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` has the shape of a kernel folder made by :func:`new_folder`: a real
    folder two levels below a real ``dss-kernels`` folder of ours. Only such a path is ever
    removed, whatever a label or a persisted record says."""
    if not path:
        return False
    folder = Path(path)
    process, parent = folder.parent, folder.parent.parent
    if not (
        folder.is_absolute()
        and _FOLDER_NAME.fullmatch(folder.name)
        and _PROCESS_NAME.fullmatch(process.name)
        and parent.name.startswith(PARENT_NAME)
    ):
        return False
    try:
        for level in (parent, process):
            st = os.lstat(level)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                return False
        return stat.S_ISDIR(os.lstat(folder).st_mode)
    except OSError:
        return False


def remove_folder(path: str | None) -> None:
    """Remove a kernel folder and its sockets (blocking); anything else is left alone."""
    if path and is_kernel_folder(path):
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # the process folder, once empty
            os.rmdir(os.path.dirname(path))


def folder_of(labels: dict[str, str]) -> str | None:
    return labels.get(FOLDER_LABEL)


def sweep(in_use: set[str], live_servers: set[str]) -> list[str]:
    """Remove folders of processes that are gone whose containers are gone too (a server
    killed between making a folder and its container, a container removed by hand)."""
    live = {server[-8:] for server in live_servers}
    removed = []
    for parent in _parents():
        if not parent.is_dir() or parent.is_symlink():
            continue
        for process in parent.iterdir():
            if process.name in live or not _PROCESS_NAME.fullmatch(process.name):
                continue
            for folder in process.iterdir() if process.is_dir() else ():
                if str(folder) not in in_use and is_kernel_folder(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(str(folder))
            with contextlib.suppress(OSError):
                process.rmdir()
    return removed


# --------------------------------------------------------------------------- CurveZMQ


def provision_curve_keys(km: Any, tcp: bool = False) -> None:
    """CurveZMQ server keys when the kernel manager asks for transport encryption, or
    (``tcp``) for a kernel on TCP whose image declares support.

    jupyter_client (>= 8.10) leaves this to provisioners; like its local one, keys are made
    once and kept across restarts (as the HMAC key is).
    """
    policy_of = getattr(km, "_transport_encryption_policy", None)
    if policy_of is None:  # a jupyter_client that cannot encrypt
        return
    policy = "auto" if tcp and policy_of() == "disabled" else policy_of()
    if policy == "disabled":
        return
    if policy == "auto" and not km._kernel_supports_curve_encryption():
        return
    import zmq

    if policy == "auto" and not zmq.has("curve"):  # 'required' is refused by the manager
        return
    if km.curve_publickey is None:
        km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()


def curve_keys(km: Any) -> dict[str, str]:
    """CurveZMQ keys when the kernel manager encrypts transport (jupyter_client >= 8.10)."""
    public, secret = getattr(km, "curve_publickey", None), getattr(km, "curve_secretkey", None)
    if public is None or secret is None:
        return {}
    return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}


def connection_summary(info: dict[str, Any]) -> str:
    """Where a kernel is reached, for log lines (no key)."""
    if info.get("transport") == "ipc":
        return f"ipc://{info.get('ip')}-*"
    return f"tcp://{info.get('ip')}"
