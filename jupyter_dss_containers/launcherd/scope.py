"""The workspace a launcher's workload sees: decided by the launcher, never by the caller.

A caller names only the working directory it would like (the notebook's folder). The root
that is mounted is the authenticated user's own, found here (their home directory from the
password database, or the launcher's ``workspace_root`` template), it must belong to the
user's OS uid, and the workload then runs as that uid:gid. A working directory outside that
root, through a symlink that leaves it, or missing, gets one uniform 403, so no answer tells
what exists elsewhere on the host.

Blocking (password database, symlinks, owners): call :func:`scope_workspace` in a worker
thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd

from ..config import ExecutionConfig
from ..workspace import (
    ROOT_DIR,
    WorkspaceError,
    WorkspacePlan,
    plan_workspace,
    resolve_inside,
    template_problem,
    user_root,
)
from .policy import Refused

log = logging.getLogger("dss_containers.launcher")

#: the default root: the user's home directory as the password database says
HOME = ""


def root_template_problem(template: str) -> str | None:
    """Why ``template`` cannot be the launcher's ``workspace_root``, or None when it can."""
    if template == HOME:
        return None
    if ROOT_DIR in template:
        return f"{ROOT_DIR} has no meaning for the launcher: use an absolute path"
    return template_problem(template)


def user_workspace_root(username: str, template: str) -> str | None:
    """The folder that is ``username``'s workspace root, or None when they have none here."""
    if template == HOME:
        try:
            home = pwd.getpwnam(username).pw_dir
        except (KeyError, UnicodeEncodeError, ValueError):
            return None
        return home if home and os.path.isabs(home) else None
    return str(user_root(username, "/", template))


def refusal(working_dir: str | None) -> Refused:
    """The one answer for a working directory that is not the user's (no oracle)."""
    return Refused(f"the working directory {working_dir!r} is not a folder of your workspace", 403)


def scope_workspace(
    config: ExecutionConfig,
    username: str,
    user_ids: str | None,
    template: str,
    working_dir: str | None,
) -> WorkspacePlan:
    """The workspace plan of one of ``username``'s workloads (``user_ids``: their OS
    ``uid:gid``, None when they have no OS account here). Nothing is mounted, and the
    caller's working directory is dropped, where the user has no root of their own here."""
    if config.workspace.mount == "none" or user_ids is None:
        return WorkspacePlan()
    root = user_workspace_root(username, template)
    if root is None or os.path.realpath(root) == "/":
        return WorkspacePlan()
    uid = int(user_ids.split(":")[0])
    try:
        if not os.path.isdir(root) or os.stat(root).st_uid != uid:
            # whatever the caller asked: nothing mounted, the same answer for any path
            log.warning("no workspace for %s: %s is not a folder of uid %d", username, root, uid)
            return WorkspacePlan()
        if working_dir is not None and (not os.path.isabs(working_dir) or "\0" in working_dir):
            raise refusal(working_dir)
        real_root, real_cwd = resolve_inside(root, working_dir or root)
    except (WorkspaceError, OSError, ValueError):
        raise refusal(working_dir) from None
    plan = plan_workspace(
        config.workspace,
        backend=config.backend,
        remote=config.on_remote_daemon,
        root=real_root,
        working_dir=real_cwd,
        user=username,
        config_name=config.name,
    )
    return dataclasses.replace(plan, user=user_ids) if plan.mounted else plan
