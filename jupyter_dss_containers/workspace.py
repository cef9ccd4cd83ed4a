"""What of the user's files a workload sees, and where it starts.

A notebook's kernel (or a ``%%container`` job) sees the user's Jupyter root at the same
absolute path as the server does, and starts in the notebook's folder, so relative and
absolute paths behave as in a local kernel. Where the daemon shares the server's disk
(a local Docker or Podman daemon) that is a bind mount; a remote daemon mounts
``workspace.host_path`` (the same tree on that host); a cluster mounts a volume. Where
nothing is shared, the workload still runs, and :attr:`WorkspacePlan.notice` says why the
files are not there and what an administrator sets.

Under an identity provider that names several users, each user's root (for the contents
API and for their workloads' mount) is one folder of their own, given by the config file's
``defaults.user_root`` template (default ``${root_dir}/${user}``): :func:`user_root`.

Everything here is pure except :func:`is_inside` and :func:`resolve_inside`, which resolve
symlinks (so nothing mounts or serves a path outside the root); callers run them in a
worker thread.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .imagecontract import VENV, WORKLOAD_FOLDERS

if TYPE_CHECKING:  # the config model imports this module
    from .config import ExecutionConfig

DEFAULT_USER_ROOT = "${root_dir}/${user}"
USER = "${user}"
ROOT_DIR = "${root_dir}"
#: characters a user name keeps in its folder name; every other one is escaped
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")
#: a folder name longer than this is shortened (with a hash of the whole name)
_MAX_NAME = 96


def folder_name(username: str) -> str:
    """The user name as one safe folder name, different for different user names.

    Lower-case letters, digits and ``_`` stay; every other character becomes ``-`` and
    the hex of its UTF-8 bytes (``Alice`` -> ``-41lice``, ``a.b`` -> ``a-2eb``), so two
    names never share a folder (unlike :func:`..config.expand_user`, which folds case for
    object names), and no name gives ``..``, ``/``, a NUL or a dotfile.
    """
    if not username:
        raise ValueError("a user root needs a user name")
    out = "".join(
        ch if ch in _KEPT else "".join(f"-{b:02x}" for b in ch.encode("utf-8")) for ch in username
    )
    if len(out) > _MAX_NAME:
        digest = hashlib.sha256(username.encode("utf-8")).hexdigest()[:20]
        out = f"{out[: _MAX_NAME - 21]}-{digest}"
    return out


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be a user root template, or None when it can."""
    if USER not in template:
        return f"expected a path template containing {USER} (else all users share one folder)"
    rest = template.replace(USER, "").replace(ROOT_DIR, "")
    if "$" in rest:
        return f"expected only the placeholders {ROOT_DIR} and {USER}"
    if not (template.startswith(ROOT_DIR) or template.startswith("/")):
        return f"expected an absolute path or one starting with {ROOT_DIR}"
    if ".." in Path(template).parts or "\0" in template:
        return "expected a path without '..' or NUL"
    return None


def user_root(username: str, server_root: str | os.PathLike[str], template: str) -> Path:
    """The absolute folder that is ``username``'s root: ``template`` with ``${root_dir}``
    (the Jupyter server's root) and ``${user}`` (:func:`folder_name`) filled in."""
    problem = template_problem(template)
    if problem:
        raise ValueError(f"user root template {template!r}: {problem}")
    path = template.replace(ROOT_DIR, os.path.abspath(server_root)).replace(
        USER, folder_name(username)
    )
    return Path(os.path.normpath(path))


def is_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True when ``path``, symlinks resolved, is ``root`` or below it (``root`` resolved too)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


#: the in-image user of the base images, used when the server's own user is root
IMAGE_UID_GID = (1000, 100)
MOUNT_MODES = ("auto", "none")


class WorkspaceError(ValueError):
    """A path that must not be mounted (outside the root, through a symlink, missing)."""


@dataclass(frozen=True)
class WorkspaceSettings:
    """The ``workspace:`` section of an execution config."""

    mount: str = "auto"
    read_only: bool = False
    #: remote Docker: the server's workspace tree as that host sees it (``${user}`` expands)
    host_path: str | None = None
    #: Kubernetes: a PVC claim name template (``home-${user}``) or a whole volume source
    volume: dict[str, Any] | None = None
    sub_path: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkspaceSettings:
        volume = data.get("volume")
        if isinstance(volume, str):
            volume = {"claim": volume}
        return cls(
            mount=data.get("mount", "auto"),
            read_only=bool(data.get("read_only", False)),
            host_path=data.get("host_path"),
            volume=dict(volume) if volume else None,
            sub_path=data.get("sub_path"),
        )


@dataclass(frozen=True)
class WorkspacePlan:
    """How one workload sees the workspace: a mount (or none) and a working directory."""

    #: the workspace root as the server sees it, and the path it has inside the workload
    root: str | None = None
    #: where the daemon finds it (a bind source); the root itself on a local daemon
    source: str | None = None
    #: Kubernetes: the volume source, claim or otherwise, and the sub-path in it
    volume: dict[str, Any] | None = None
    sub_path: str | None = None
    read_only: bool = False
    working_dir: str | None = None
    #: the uid:gid the workload runs as while the workspace is mounted (files it writes
    #: are then the user's); None: the image's user
    user: str | None = None
    #: said once in the notebook when the files are not visible, else None
    notice: str | None = None
    #: where nothing is shared: the working folder a job takes a bounded copy of
    #: (:mod:`.jobs.snapshot`), else None
    snapshot_dir: str | None = None

    @property
    def mounted(self) -> bool:
        return self.root is not None


def expand(template: str, user: str) -> str:
    """``${user}`` in a host path or claim name: the user's folder name (:func:`folder_name`)."""
    return template.replace(USER, folder_name(user))


def resolve_inside(
    root: str | os.PathLike[str], path: str | os.PathLike[str] | None
) -> tuple[str, str]:
    """The real root and the real ``path`` (default: the root), refusing a path that leaves it.

    Symlinks are resolved first, so ``..`` and a link planted in the workspace that points
    elsewhere (``/``, another user's folder) are both refused.
    """
    real_root = Path(root).resolve(strict=False)
    if not real_root.is_dir():
        raise WorkspaceError(f"the workspace {root} is not a folder")
    target = Path(path) if path else real_root
    if not target.is_absolute():
        target = real_root / target
    real = target.resolve(strict=False)
    if real != real_root and real_root not in real.parents:
        raise WorkspaceError(f"{path} is outside the workspace {real_root}")
    if not real.is_dir():
        raise WorkspaceError(f"the working directory {path} is not a folder of the workspace")
    return str(real_root), str(real)


def plan_workspace(
    settings: WorkspaceSettings,
    *,
    backend: str,
    remote: bool,
    root: str | None,
    working_dir: str | None,
    user: str,
    config_name: str,
) -> WorkspacePlan:
    """The mount and working directory of one workload (root and cwd already resolved)."""
    if settings.mount == "none" or root is None:
        return WorkspacePlan()
    cwd = working_dir or root
    common = {"root": root, "read_only": settings.read_only, "working_dir": cwd}
    if backend == "kubernetes":
        if settings.volume:
            from .config import expand_user  # object names: Kubernetes' rules, not a folder's

            volume = {
                k: expand_user(v, user) if isinstance(v, str) else v
                for k, v in settings.volume.items()
            }
            sub = expand(settings.sub_path, user) if settings.sub_path else None
            return WorkspacePlan(volume=volume, sub_path=sub, **common)
        notice = _not_shared(config_name, "workspace.volume", "a volume")
        return WorkspacePlan(notice=notice, snapshot_dir=cwd, read_only=settings.read_only)
    if remote:
        if settings.host_path:
            return WorkspacePlan(source=expand(settings.host_path, user), **common)
        notice = _not_shared(config_name, "workspace.host_path", "the same tree on that host")
        return WorkspacePlan(notice=notice, snapshot_dir=cwd, read_only=settings.read_only)
    return WorkspacePlan(source=root, **common)


#: folders of the workload itself (the system, our venv, the kernel's and job's private
#: folders): a workspace mounted at one of them, or at a folder above one, would hide it
IMAGE_FOLDERS = (
    "/bin",
    "/dev",
    "/etc",
    "/lib",
    VENV,
    "/proc",
    "/sbin",
    "/sys",
    "/usr",
    *WORKLOAD_FOLDERS,
)


def hides_the_image(path: str) -> bool:
    """True for a mount point that is one of :data:`IMAGE_FOLDERS` or lies above one."""
    base = path.rstrip("/") + "/"
    return any((f + "/").startswith(base) for f in IMAGE_FOLDERS)


def _not_mountable(config: str, root: str) -> str:
    return (
        f"dss-containers: the notebook's files are not visible in this container: their "
        f"folder {root} would hide the container's own system folders (execution config "
        f"{config!r}); start the server or the notebook in a folder of its own."
    )


def _not_shared(config: str, key: str, what: str) -> str:
    return (
        f"dss-containers: the notebook's files are not visible in this container: execution "
        f"config {config!r} runs where the server's disk is not shared. An administrator sets "
        f"{key} in the config file ({what}) to mount them; until then, files read or written "
        "here stay in the container."
    )


def workload_user(server_uid: int, server_gid: int, root_owner: tuple[int, int] | None) -> str:
    """The uid:gid a workload with the workspace mounted runs as: never root.

    The server's own user, so files the kernel writes are the user's; a server running as
    root hands the workspace's owner (or, for a root-owned workspace, the image's user).
    """
    if server_uid != 0:
        return f"{server_uid}:{server_gid}"
    if root_owner is not None and root_owner[0] != 0:
        return f"{root_owner[0]}:{root_owner[1]}"
    return "{}:{}".format(*IMAGE_UID_GID)


def notice_script(notice: str) -> str:
    """IPython code that prints the notice once, in the output of the first cell run."""
    return (
        "def _dss_workspace_notice(*_args):\n"
        "    import sys\n"
        f"    print({notice!r}, file=sys.stderr)\n"
        "    get_ipython().events.unregister('pre_run_cell', _dss_workspace_notice)\n"
        "get_ipython().events.register('pre_run_cell', _dss_workspace_notice)\n"
    )


def resolve_plan(
    settings: WorkspaceSettings,
    *,
    backend: str,
    remote: bool,
    server_root: str | None,
    cwd: str | None,
    user: str,
    config_name: str,
) -> WorkspacePlan:
    """The plan of one workload: the root (the server's or the user's, else the working
    folder itself), checked and resolved; who the workload runs as.

    File-system work (symlinks, owners): call it in a worker thread. Raises
    :class:`WorkspaceError` for a working folder outside the root.
    """
    if settings.mount == "none":
        return WorkspacePlan()
    here = cwd or server_root or os.getcwd()  # a kernel started with no path: the root
    root = server_root or here
    if hides_the_image(os.path.realpath(root)):  # never over the image's own folders
        root = here
    if hides_the_image(os.path.realpath(root)):
        return WorkspacePlan(notice=_not_mountable(config_name, root))
    real_root, real_cwd = resolve_inside(root, here)
    plan = plan_workspace(
        settings,
        backend=backend,
        remote=remote,
        root=real_root,
        working_dir=real_cwd,
        user=user,
        config_name=config_name,
    )
    if not plan.mounted:
        return plan
    info = os.stat(real_root)
    return replace(plan, user=workload_user(os.getuid(), os.getgid(), (info.st_uid, info.st_gid)))


def unwritable_told(plan: WorkspacePlan) -> WorkspacePlan:
    """A notebook kernel's plan, with a notice when a root server's kernel (another uid,
    never root) may not write the server's folder it is bound to: said in the first cell
    rather than left to a bare 'Permission denied'. File-system work: in a worker thread."""
    local_bind = plan.mounted and plan.volume is None and plan.source == plan.root
    if os.getuid() != 0 or not local_bind or plan.read_only or not plan.user:
        return plan
    folder = plan.working_dir or plan.root or ""
    info = os.stat(folder)
    uid, gid = (int(part) for part in plan.user.split(":"))
    if may_write(uid, gid, info):
        return plan
    return replace(plan, notice=_not_writable(plan.user, folder, plan.root or folder, info))


def may_write(uid: int, gid: int, info: os.stat_result) -> bool:
    """Whether ``uid:gid`` may create files in a folder of this ``stat``, by its mode bits
    (the owner's, else the group's, else the others'; ACLs are not read)."""
    if uid == info.st_uid:
        return bool(info.st_mode & 0o200)
    if gid == info.st_gid:
        return bool(info.st_mode & 0o020)
    return bool(info.st_mode & 0o002)


def _not_writable(user: str, folder: str, root: str, info: os.stat_result) -> str:
    """A root server's kernel runs as another uid: say so before a write fails unexplained."""
    return (
        f"dss-containers: this kernel runs as {user} (never as root, though the server does) "
        f"and may not write in {folder} (owner {info.st_uid}:{info.st_gid}, mode "
        f"{info.st_mode & 0o777:o}): files written there fail with 'Permission denied'. "
        f"Give the folder to a non-root user (chown -R {user} {root}), or run Jupyter as "
        "your own user."
    )


def config_plan(
    config: ExecutionConfig, *, server_root: str | None, cwd: str | None, user: str
) -> WorkspacePlan:
    """:func:`resolve_plan` for one execution config (its workspace settings, backend and
    daemon): the one call kernels and jobs make. In a worker thread, as that one."""
    return resolve_plan(
        config.workspace,
        backend=config.backend,
        remote=config.on_remote_daemon,
        server_root=server_root,
        cwd=cwd,
        user=user,
        config_name=config.name,
    )
