"""On a server running as root, what it saves in a user's folder becomes that user's.

A root server runs a notebook's kernel as the owner of the workspace (never as root, see
:func:`..workspace.workload_user`). Files and folders the server itself creates (a new
folder or notebook in JupyterLab, an upload, a save) would be root's, and the kernel could
then not write beside its notebook. So, after each save, the item takes the owner and group
of the folder it was saved in, where that folder is not root's: a root-owned folder keeps
root's files as before.
"""

from __future__ import annotations

import os
from typing import Any


def owner_to_inherit(folder: os.stat_result, server_uid: int) -> tuple[int, int] | None:
    """The uid:gid a new item in ``folder`` takes, or None to leave it as saved."""
    if server_uid != 0 or folder.st_uid == 0:
        return None
    return folder.st_uid, folder.st_gid


def inherit_owner(os_path: str, **_: Any) -> None:
    """A contents manager post-save hook (``register_post_save_hook``)."""
    owner = owner_to_inherit(os.stat(os.path.dirname(os_path)), os.geteuid())
    if owner is not None and not os.path.islink(os_path):
        os.chown(os_path, *owner, follow_symlinks=False)
