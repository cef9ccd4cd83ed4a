"""A bounded copy of the caller's working folder, for a job that runs where nothing is
shared (a Kubernetes config without a workspace volume, a remote daemon without
``host_path``), and the files the job wrote under it written back next to the notebook,
refusing conflicts.

In: the folder's regular files (symlinks and special files are left out, so nothing
outside the folder is read; so are :data:`SKIPPED` folders, never a job's input), at
most ``limit`` bytes, packed as one gzip'd tar that travels with the job's other private
files. On Kubernetes those go in the job's Secret,
which holds at most 1 MiB (the API server's limit): the packed archive must fit in it
beside the payload, so the default limit is half of that and the packed size is checked
against the Secret limit too, each refusal naming its limit.

Back: the job hands back the files it wrote or changed under the folder beside its result
(framed into its log on Kubernetes, ``backends/logfiles.py``); each comes back as
(relative path, bytes), data only, and is written (atomically) only where the host's file
is still what the snapshot held, or still absent: a file changed on the host since the
snapshot is a conflict, left as it is and reported, never overwritten. A path that
leaves the folder (absolute, ``..``, through a symlink) is refused.

The job service's side (the traits, the copy's notice, the write-back when the job ends)
is :mod:`.workdir`; the runner unpacks the archive and hands back the changed files.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

#: the default limit on the folder's bytes: half of a Secret, the rest for the payload
SNAPSHOT_LIMIT = 512 * 1024
#: what the API server accepts in one Secret's data (the job's files all travel in it)
SECRET_LIMIT = 1024 * 1024
ARCHIVE_NAME = "workdir.tar.gz"
#: folders left out of the copy: version control, JupyterLab's checkpoints, bytecode
SKIPPED = frozenset({".git", ".hg", ".svn", ".ipynb_checkpoints", "__pycache__"})


class SnapshotTooBig(ValueError):
    """The working folder holds more than a job may take with it."""


@dataclass(frozen=True)
class Snapshot:
    """What a job took: the folder, each file's SHA-256 then, and the packed archive."""

    folder: str
    digests: dict[str, str]
    archive: bytes
    size: int
    #: the config's workspace is read-only: nothing is written back
    read_only: bool = False


@dataclass
class WriteBack:
    """What became of a finished job's files (relative paths)."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: changed on the host since the snapshot: kept as the host has them
    conflicts: list[str] = field(default_factory=list)
    #: paths that would leave the folder, or are not plain files there
    refused: list[str] = field(default_factory=list)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def take(folder: str, limit: int = SNAPSHOT_LIMIT, packed_limit: int = SECRET_LIMIT) -> Snapshot:
    """The folder's regular files, packed; :class:`SnapshotTooBig` past either limit.

    File I/O: call it in a worker thread.
    """
    base = os.path.realpath(folder)
    files: dict[str, bytes] = {}
    size = 0
    for here, dirs, names in os.walk(base):  # does not follow symlinked folders
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for name in sorted(names):
            path = os.path.join(here, name)
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue  # a symlink may point anywhere; sockets and fifos are no data
            size += os.lstat(path).st_size
            if size > limit:
                raise SnapshotTooBig(
                    f"the working folder {folder} holds more than {limit} bytes of files, the "
                    "most a job takes with it where the config shares no workspace "
                    "(JobService.snapshot_limit): run it from a smaller folder, have an "
                    "administrator set workspace.volume (or host_path), or run it without "
                    "the files: jupyter_dss_containers.jobs.service().snapshot_limit = 0"
                )
            with open(path, "rb") as f:
                files[os.path.relpath(path, base)] = f.read()
    archive = pack(files)
    if len(archive) > packed_limit:
        raise SnapshotTooBig(
            f"the working folder {folder} packs to {len(archive)} bytes, more than the "
            f"{packed_limit} bytes a job's files may take in its Secret"
        )
    digests = {rel: _digest(data) for rel, data in files.items()}
    return Snapshot(folder=base, digests=digests, archive=archive, size=size)


def pack(files: dict[str, bytes]) -> bytes:
    """A gzip'd tar of ``files`` (relative path -> bytes), owned by nobody in particular."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(files[rel]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[rel]))
    return out.getvalue()


def path_problem(rel: str) -> str | None:
    """Why ``rel`` cannot be a file of the folder, else None (pure)."""
    parts = PurePosixPath(rel).parts
    if not rel or "\0" in rel or rel.startswith("/") or not parts:
        return "expected a relative path"
    if any(p in ("..", ".") for p in parts) or rel != str(PurePosixPath(*parts)):
        return "expected a normalized path without '..'"
    return None


def write_back(snapshot: Snapshot, outputs: dict[str, bytes]) -> WriteBack:
    """Write each output where the host still has what the snapshot saw (or nothing).

    File I/O: call it in a worker thread.
    """
    result = WriteBack()
    base = snapshot.folder
    for rel in sorted(outputs):
        data = outputs[rel]
        target = os.path.join(base, rel)
        parent = os.path.realpath(os.path.dirname(target))
        if path_problem(rel) or not (parent == base or parent.startswith(base + os.sep)):
            result.refused.append(rel)
            continue
        current = _current(target)
        if current is False:
            result.refused.append(rel)
        elif current == _digest(data):
            result.unchanged.append(rel)
        elif current != snapshot.digests.get(rel):
            result.conflicts.append(rel)
        else:
            _write(base, parent, os.path.basename(target), data)
            result.written.append(rel)
    return result


def _current(path: str) -> str | bool | None:
    """The file's SHA-256, None when absent, False when it is not a plain file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return False
    with open(path, "rb") as f:
        return _digest(f.read())


def _write(base: str, folder: str, name: str, data: bytes) -> None:
    """Write atomically; a process running as root (a root server's kernel) gives what it
    makes to the owner of the snapshot's folder, as the uid rule does for mounted ones."""
    owner = None
    if os.geteuid() == 0:
        info = os.stat(base)
        owner = (info.st_uid, info.st_gid)
    _makedirs(base, folder, owner)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, os.path.join(folder, name))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _makedirs(base: str, folder: str, owner: tuple[int, int] | None) -> None:
    """The folders from ``base`` down to ``folder``, each new one given to ``owner``."""
    missing = []
    here = folder
    while here != base and not os.path.isdir(here):
        missing.append(here)
        here = os.path.dirname(here)
    for path in reversed(missing):
        os.mkdir(path)
        if owner is not None:
            os.chown(path, *owner)
