"""Private files into a container and a job's files out of it, as tar archives (pure).

A workload's private files (a kernel's connection file, a job's payload) are never passed
through environment variables or labels: they are copied in before the start as a tar whose
folders (0700) and files (0600) belong to the container's user, or, for a kernel with a
folder on this host, written into that folder (see :mod:`...transport`).
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import PurePosixPath

from ...config import ExecutionConfig
from ..base import BackendError, WorkloadSpec

#: the only writable place of a read-only root filesystem that exists before the start
READ_ONLY_FILES_ROOT = "/tmp"


def split_files(
    config: ExecutionConfig, spec: WorkloadSpec
) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(files to copy in, files to write into the host folder, by name in it).

    A file directly in the host folder's target goes into the folder; the rest is copied.
    With ``read_only_root`` the copied files must lie under /tmp (the one writable place).
    """
    files, in_folder = dict(spec.files), {}
    if spec.host_folder:
        inside = spec.host_folder_target.rstrip("/") + "/"
        in_folder = {
            p[len(inside) :]: files.pop(p)
            for p in list(files)
            if p.startswith(inside) and "/" not in p[len(inside) :]
        }
    if config.read_only_root and any(not p.startswith(READ_ONLY_FILES_ROOT + "/") for p in files):
        raise BackendError(
            f"execution config {config.name!r}: with read_only_root, private files "
            f"must be under /tmp/, not {sorted(files)}"
        )
    return files, in_folder


def files_root(config: ExecutionConfig) -> str:
    """Where the copied files' tar is unpacked: a read-only root takes files in /tmp only."""
    return READ_ONLY_FILES_ROOT if config.read_only_root else "/"


def private_tar(
    files: dict[str, bytes], user: str, root: str = "/", empty: tuple[str, ...] = ()
) -> bytes:
    """A tar of files (mode 0600) in private folders (0700), owned by the container's user,
    to unpack at ``root`` (the files' absolute paths are made relative to it); ``empty``:
    folders to make too (a job's scratch folders; those outside ``root`` are left out)."""
    uid, _, gid = user.partition(":")
    uid_n, gid_n = int(uid), int(gid or uid)
    files = {str(PurePosixPath("/", p).relative_to(root)): c for p, c in files.items()}
    now = int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = {str(PurePosixPath(p).parent).lstrip("/") for p in files}
        base = root.rstrip("/") + "/"
        folders |= {str(PurePosixPath(d).relative_to(root)) for d in empty if d.startswith(base)}
        for folder in sorted(f for f in folders if f not in ("", ".", "tmp")):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o700, uid_n, gid_n
            info.mtime = now
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.uid, info.gid = len(content), 0o600, uid_n, gid_n
            info.mtime = now
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def regular_files(data: bytes) -> dict[str, bytes]:
    """The regular files of a tar the daemon sent, by their path in it (read as bytes only:
    nothing in it is unpacked to disk, followed as a link or run)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
