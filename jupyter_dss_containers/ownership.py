"""Labels on every container and pod, and which live process owns them.

Every workload carries the labels below. A process that starts workloads (a Jupyter
server, or a plain ``jupyter_client`` user such as nbclient) registers itself in a folder
shared by all processes of the OS user on this host (not the Jupyter runtime folder, which
differs between environments); a workload started on this host whose registering process
is gone, and which no live process has adopted (reattached to), is an orphan that
``cleanup`` and server start-up reap. Workloads started from other hosts are left alone.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from functools import cache
from pathlib import Path
from typing import Any

PREFIX = "dss-containers.jupyter.org/"
KIND = PREFIX + "kind"  # kernel | job | pool | prepull
#: on a pool workload: what it waits to serve (``job`` for a job pool's runner; none: a kernel)
POOL_OF = PREFIX + "pool-of"
KERNEL_ID = PREFIX + "kernel-id"
JOB_ID = PREFIX + "job-id"
CONFIG = PREFIX + "config"
CODE_ENV = PREFIX + "code-env"
OWNER = PREFIX + "owner"
SERVER_ID = PREFIX + "server-id"
HOST = PREFIX + "host"
#: the OS uid of the process that started it: the process registry is per OS user, so only
#: that user's reaper can tell whether its starter still lives
HOST_UID = PREFIX + "host-uid"
MANAGED = PREFIX + "managed"
#: written by the trusted launcher on what it starts: its own reaper decides about those
LAUNCHER = PREFIX + "launcher"
#: on what is meant to outlive the process that made it (``prepull --keep``'s DaemonSet):
#: only ``cleanup --all`` removes it
KEEP = PREFIX + "keep"


def workload_labels(
    kind: str,
    config: str,
    owner: str,
    kernel_id: str | None = None,
    job_id: str | None = None,
    code_env: str | None = None,
) -> dict[str, str]:
    labels = {
        MANAGED: "true",
        KIND: kind,
        CONFIG: config,
        OWNER: owner,
        SERVER_ID: this_process().server_id,
        HOST: socket.gethostname(),
        HOST_UID: str(os.getuid()),
    }
    if kernel_id:
        labels[KERNEL_ID] = kernel_id
    if job_id:
        labels[JOB_ID] = job_id
    if code_env:
        labels[CODE_ENV] = code_env
    return labels


class ProcessRegistry:
    """A small file per process in the runtime folder: its pid and the kernels it adopted."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder or registry_folder()
        self.server_id = f"{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._adopted: set[str] = set()
        self._registered = False

    @property
    def path(self) -> Path:
        return self.folder / f"{self.server_id}.json"

    def register(self) -> None:
        """Write (or rewrite) this process's file; cheap, called before each launch."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"pid": os.getpid(), "host": socket.gethostname(), "adopted": sorted(self._adopted)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)
        self._registered = True

    def adopt(self, workload_id: str) -> None:
        self._adopted.add(workload_id)
        self.register()

    def release(self, workload_id: str) -> None:
        if workload_id in self._adopted:
            self._adopted.discard(workload_id)
            self.register()

    def unregister(self) -> None:
        self.path.unlink(missing_ok=True)

    def live_claims(self) -> tuple[set[str], set[str]]:
        """(server ids of live processes, workload ids adopted by live processes)."""
        servers, adopted = set(), set()
        for entry in self.folder.glob("*.json") if self.folder.is_dir() else ():
            try:
                data = json.loads(entry.read_text())
            except (OSError, ValueError):
                continue
            if data.get("host") == socket.gethostname() and _pid_alive(int(data.get("pid", 0))):
                servers.add(entry.stem)
                adopted.update(data.get("adopted", ()))
            else:
                entry.unlink(missing_ok=True)
        return servers, adopted


def registry_folder() -> Path:
    """``$DSS_CONTAINERS_RUNTIME_DIR``, else a per-user folder under the temp folder."""
    import tempfile

    explicit = os.environ.get("DSS_CONTAINERS_RUNTIME_DIR")
    return (
        Path(explicit)
        if explicit
        else Path(tempfile.gettempdir()) / f"dss-containers-{os.getuid()}"
    )


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@cache
def this_process() -> ProcessRegistry:
    """The registry entry of the current process (one per process)."""
    import atexit

    registry = ProcessRegistry()
    atexit.register(registry.unregister)
    return registry


async def reap_orphans(
    configs: list[Any], everything: bool = False, users: Any = ()
) -> tuple[list[Any], dict[str, str]]:
    """Remove our workloads that no live process owns (all of ours with ``everything``).

    ``configs`` are execution configs; each distinct daemon, cluster and namespace is
    asked once (with ``namespace: dss-${user}``, those of ``users`` and of this process's
    user, and those the backend created: :mod:`.reapscope`), and one that cannot be
    reached is reported, not fatal. Returns (removed workloads, {config name: why its
    daemon or cluster was skipped}).
    """
    import asyncio

    from . import transport
    from .backends import BackendError
    from .reapscope import reaping_backends

    servers, adopted = this_process().live_claims()
    # this process is alive even before it registers (its first kernel may be starting
    # while its start-up reaper runs)
    servers.add(this_process().server_id)
    here = socket.gethostname()
    seen: set[Any] = set()
    removed, skipped = [], {}
    folders: set[str] = set()
    for config in configs:
        try:
            backends = await reaping_backends(config, users)
        except BackendError as exc:
            skipped[config.name] = str(exc)
            continue
        for backend in backends:
            if backend.target_key() in seen:
                continue
            seen.add(backend.target_key())
            try:
                await _reap_in(backend, everything, servers, adopted, here, removed, folders)
            except BackendError as exc:
                skipped[config.name] = str(exc)
    if not skipped:  # kernel folders of dead processes whose containers are gone, too
        await asyncio.to_thread(transport.sweep, folders, servers)
    return removed, skipped


async def _reap_in(
    backend: Any,
    everything: bool,
    servers: set[str],
    adopted: set[str],
    here: str,
    removed: list[Any],
    folders_in_use: set[str],
) -> None:
    """Reap one backend's orphans (see :func:`reap_orphans`)."""
    import asyncio

    from . import transport
    from .backends.remote import RemoteBackend

    # a workload of a config over several daemons is adopted as ``<host>/<container>``;
    # another config's listing of that daemon names it by its container id alone
    adopted_here = adopted | {a.rsplit("/", 1)[-1] for a in adopted}
    for workload in await backend.list({MANAGED: "true"}):
        labels = workload.labels
        bare = workload.id.rsplit("/", 1)[-1]
        owned = labels.get(SERVER_ID) in servers or {workload.id, bare} & adopted_here != set()
        # its starter's liveness is unknown here: another host, or another OS user's
        elsewhere = labels.get(HOST, here) != here or labels.get(HOST_UID, str(os.getuid())) != str(
            os.getuid()
        )
        if LAUNCHER in labels and not (everything or isinstance(backend, RemoteBackend)):
            continue  # a user's, run by a launcher: the registry here knows nothing of it
        if labels.get(KEEP) == "true" and not everything:
            continue
        if everything or not (owned or elsewhere):
            await backend.remove(workload.id)
            await asyncio.to_thread(transport.remove_folder, transport.folder_of(labels))
            removed.append(workload)
        elif folder := transport.folder_of(labels):
            folders_in_use.add(folder)
