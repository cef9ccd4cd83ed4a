"""What of the user's files a workload sees, and where it starts.

A notebook's kernel (or a ``%%container`` job) sees the user's Jupyter root at the same
absolute path as the server does, and starts in the notebook's folder, so relative and
absolute paths behave as in a local kernel. Where the daemon shares the server's disk
(a local Docker or Podman daemon) that is a bind mount; a remote daemon mounts
``workspace.host_path`` (the same tree on that host); a cluster mounts a volume. Where
nothing is shared, the workload still runs, and :attr:`WorkspacePlan.notice` says why the
files are not there and what an administrator sets.

:func:`plan_workspace` is pure: :func:`resolve_inside` does the one piece of file-system
work (resolving symlinks, so nothing mounts a path outside the root) and is called in a
worker thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    #: said once in the notebook when the files are not visible, else None
    notice: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def mounted(self) -> bool:
        return self.root is not None


def expand(template: str, user: str) -> str:
    """``${user}`` in a path or claim name, made safe as one path segment."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", user).strip(".-") or "user"
    return template.replace("${user}", safe)


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
            volume = {
                k: expand(v, user) if isinstance(v, str) else v for k, v in settings.volume.items()
            }
            sub = expand(settings.sub_path, user) if settings.sub_path else None
            return WorkspacePlan(volume=volume, sub_path=sub, **common)
        return WorkspacePlan(notice=_not_shared(config_name, "workspace.volume", "a volume"))
    if remote:
        if settings.host_path:
            return WorkspacePlan(source=expand(settings.host_path, user), **common)
        return WorkspacePlan(
            notice=_not_shared(config_name, "workspace.host_path", "the same tree on that host")
        )
    return WorkspacePlan(source=root, **common)


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
