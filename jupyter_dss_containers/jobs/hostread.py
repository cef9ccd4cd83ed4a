"""A job's result files read from its private host folder instead of out of its container.

Where a job's folder is a host folder of ours bind-mounted at the job folder (a pooled
runner's, or a cold job's on a local daemon: :mod:`.pool`), its stopped container left
``result.json`` and ``values.pkl`` there; reading them from the host saves the daemon's
archive round trips. The folder belongs to the container's user, so what is in it is the
job's: a name is opened without following a link and read only if it is a regular file,
within the same limit, and anything else (a link, a folder, a deeper path) is read through
the backend as before. The container has exited, so nothing in it changes the folder while
it is read; no other user can reach the folder (its parents are the server's, mode 0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat

from .. import transport
from ..backends import Backend
from ..backends.base import FilesTooLarge
from . import rlang

JOB_DIR = rlang.JOB_DIR


def read_flat(folder: str, name: str, limit: int | None) -> dict[str, bytes] | None:
    """``{name: bytes}``, ``{}`` when absent, or None when the host cannot say (not a
    transport folder, a link or something other than a regular file: ask the backend)."""
    if not transport.is_kernel_folder(folder):
        return None
    try:
        fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link: the backend's archive holds it as a link
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        st = os.fstat(f.fileno())
        if limit is not None and st.st_size > limit:
            raise FilesTooLarge(f"{JOB_DIR}/{name} holds more than {limit} bytes")
        data = f.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:
        raise FilesTooLarge(f"{JOB_DIR}/{name} holds more than {limit} bytes")
    return {name: data}


class FolderReader:
    """``read_files`` of a job with a host folder: flat names from the folder, the rest
    (and whatever the folder cannot answer) from the backend."""

    def __init__(self, backend: Backend, folder: str):
        self.backend = backend
        self.folder = folder

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        inside = JOB_DIR + "/"
        name = path[len(inside) :] if path.startswith(inside) else ""
        if name and "/" not in name and name not in (".", ".."):
            found = await asyncio.to_thread(read_flat, self.folder, name, limit)
            if found is not None:
                return found
        return await self.backend.read_files(workload_id, path, limit=limit)
