"""Real OS users for tests that run a Jupyter server as somebody other than root.

A single-user server under JupyterHub runs as its user's own uid; these tests do the same
with ``runuser``. The test Python lives under root's home (pyenv, mode 0700 there), so the
folders on the way to it are made traversable (``o+x``, never ``o+r``).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from conftest import need


def os_user(name: str, groups: tuple[str, ...] = ()) -> pwd.struct_passwd:
    """The OS user ``name`` (created when missing), in ``groups`` (each must exist)."""
    if os.geteuid() != 0:
        need("creating OS users needs root")
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        need("useradd and runuser are needed to run a server as another OS user")
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
    for group in groups:
        try:
            members = grp.getgrnam(group).gr_mem
        except KeyError:
            need(f"no OS group {group!r} (is docker.io installed?)")
        if name not in members:
            subprocess.run(["usermod", "-aG", group, name], check=True)
    let_others_run(Path(sys.executable))
    return pwd.getpwnam(name)


def let_others_run(path: Path) -> None:
    """Let other users traverse every folder down to ``path`` and its real target."""
    for target in {path, path.resolve()}:
        for folder in [*reversed(target.parents)][1:]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                folder.chmod(mode | stat.S_IXOTH)
    # the virtual environment's interpreter and its packages must be readable too
    prefix = Path(sys.prefix)
    if not os.access(prefix, os.R_OK | os.X_OK):
        prefix.chmod(prefix.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)


def owned_by(path: Path, user: pwd.struct_passwd) -> Path:
    """``path`` (a folder, created) and everything in it owned by ``user``."""
    path.mkdir(parents=True, exist_ok=True)
    for item in [path, *path.rglob("*")]:
        os.chown(item, user.pw_uid, user.pw_gid)
    return path
