"""Pooled jobs: job runners already started in containers, each handed to one job.

A config with ``warm_pool: {jobs: N}`` keeps N job containers started ahead of time by
the job service that runs its jobs (the Jupyter server's for REST jobs, a kernel's own for
its ``%%container`` cells, while that kernel lives): Python started and the runner
imported (``runner.py --wait``), blocked on a named pipe in its job folder. The folder is
a private host folder (mode 0700 in a 0700 parent, owned by the container's user, as a
kernel's ipc folder: :mod:`..transport`), bind-mounted at the job folder, so a local
Docker or Podman daemon only; elsewhere jobs start cold.

A job takes a runner: its payload is written into the folder (no link followed), one byte
into the pipe, and from then on the job is a cold job's twin: output on stdout, the result
read back as data (from the folder: :mod:`.hostread`), the container and its folder
removed at the end. A runner is started for nobody (owner ``-``, kind ``pool``: the same
create arguments as a cold job's, so the same user, capabilities, limits and read-only
root), never returns to the pool, and the pool refills when its job ends. Only configs
that mount no workspace may have a pool (the file's checks); a job that needs more than
files in its job folder (a recipe's package), an R job and a code environment's job start
cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
import time
from dataclasses import dataclass

from .. import images, ownership, transport
from ..backends import Backend, BackendError, backend_for
from ..backends.base import Workload, WorkloadSpec
from ..config import ConfigFile, ExecutionConfig
from ..pool import config_fingerprint
from . import rlang
from .model import Job, JobRequest
from .payload import RUNNER

JOB_DIR = rlang.JOB_DIR
#: the pipe a waiting runner blocks on (made by the runner itself)
GO = ".go"
#: label telling job runners from pooled kernels (both are kind ``pool``)
POOL_OF = ownership.POOL_OF


@dataclass
class Runner:
    """One started runner: its container and its folder on this host."""

    workload: Workload
    folder: str
    fingerprint: str


def poolable(config: ExecutionConfig, backend: Backend) -> bool:
    """Whether jobs of this config may take pooled runners here: a pool asked for, and a
    Docker or Podman daemon of this host (it mounts our folders)."""
    from ..backends.docker import DockerBackend

    return (
        config.warm_pool_jobs > 0
        and isinstance(backend, DockerBackend)  # not through a launcher
        and transport.is_local_daemon(config)
    )


def in_job_folder(files: dict[str, bytes]) -> dict[str, bytes] | None:
    """The job's files by name in the job folder, or None when one lies deeper (they are
    written into one flat folder)."""
    inside = JOB_DIR + "/"
    names = {p[len(inside) :]: v for p, v in files.items() if p.startswith(inside)}
    if len(names) != len(files) or any("/" in n or n in ("", ".", "..", GO) for n in names):
        return None
    return names


def hand_over(folder: str, files: dict[str, bytes]) -> None:
    """Write the job's files into the runner's folder, then wake it (blocking). Refuses a
    folder that is not a kernel-shaped folder of ours and a pipe that is not one."""
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or not transport.is_kernel_folder(folder):
        raise transport.TransportError(f"{folder} is not a job runner's folder")
    transport.prepare_folder(folder, f"{st.st_uid}:{st.st_gid}", files)
    try:  # no reader (the runner died): ENXIO, at once
        fd = os.open(os.path.join(folder, GO), os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        raise transport.TransportError(f"the runner does not wait: {exc}") from None
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise transport.TransportError("the runner's pipe is not a pipe")
        os.write(fd, b"1")
    finally:
        os.close(fd)


def _waiting(folder: str) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISFIFO(os.lstat(os.path.join(folder, GO)).st_mode)
    return False


class JobPool:
    """Started job runners per config, for one job service."""

    def __init__(self, log, python: str = "python3", ready_timeout: float = 60.0):
        self.log = log
        self.python = python
        self.ready_timeout = ready_timeout
        self._ready: dict[str, list[Runner]] = {}
        self._fills: dict[str, asyncio.Task[None]] = {}
        #: every runner created and not yet handed to a job or removed, by container id
        #: (what ``stop`` removes, even one whose start failed while the process exits)
        self._started: dict[str, tuple[Backend, Runner]] = {}
        self._stopped = False

    def size(self, name: str) -> int:
        return len(self._ready.get(name, []))

    def held(self) -> bool:
        """Whether any runner waits or is being started (something to remove at exit)."""
        return bool(self._started) or any(not t.done() for t in self._fills.values())

    async def prefill(self, config_file: ConfigFile) -> None:
        """Start filling every pool of the file (the server does at start; a kernel's
        service fills a config's pool at its first job instead)."""
        for config in config_file.execution_configs.values():
            if config.warm_pool_jobs <= 0:
                continue
            try:
                image = await asyncio.to_thread(images.resolve_image, config_file, config)
            except ValueError as exc:
                self.log.warning("dss-containers job pool %r: %s", config.name, exc)
                continue
            self.refill(config, image, backend_for(config))

    def runners(self, name: str) -> list[Runner]:
        return list(self._ready.get(name, []))

    async def take(self, config: ExecutionConfig, image: str, backend: Backend) -> Runner | None:
        """A waiting runner for this config and image (None: none ready, or no pool; the
        pool then refills in the background)."""
        if not poolable(config, backend):
            return None
        wanted = config_fingerprint(config, image)
        entries = self._ready.setdefault(config.name, [])
        found = None
        while entries and found is None:
            runner = entries.pop(0)
            alive = runner.fingerprint == wanted and await _alive(backend, runner)
            if alive:
                found = runner
                self._started.pop(runner.workload.id, None)  # the job's from now on
            else:
                await self.discard(backend, runner)
        if found is None:
            self.refill(config, image, backend)
        return found  # (its job refills the pool when it ends: see start_pooled)

    def refill(self, config: ExecutionConfig, image: str, backend: Backend) -> None:
        """Bring the config's pool to its size in the background (once at a time)."""
        task = self._fills.get(config.name)
        if self._stopped or not poolable(config, backend) or (task and not task.done()):
            return
        self._fills[config.name] = asyncio.create_task(self._fill(config, image, backend))

    async def _fill(self, config: ExecutionConfig, image: str, backend: Backend) -> None:
        wanted = config_fingerprint(config, image)
        entries = self._ready.setdefault(config.name, [])
        for stale in [r for r in entries if r.fingerprint != wanted]:
            entries.remove(stale)
            await self.discard(backend, stale)
        while len(entries) < config.warm_pool_jobs and not self._stopped:
            try:
                runner = await self._start_one(config, image, backend, wanted)
            except Exception as exc:  # the next take tries again
                self.log.warning("dss-containers job pool %r: %s", config.name, exc)
                return
            if self._stopped:
                await self.discard(backend, runner)
                return
            entries.append(runner)

    async def _start_one(
        self, config: ExecutionConfig, image: str, backend: Backend, fingerprint: str
    ) -> Runner:
        ownership.this_process().register()
        try:
            folder = await asyncio.to_thread(transport.new_folder)
        except OSError as exc:
            raise BackendError(f"execution config {config.name!r}: {exc}") from None
        labels = ownership.workload_labels("pool", config.name, owner="-")
        labels.update({POOL_OF: "job", transport.FOLDER_LABEL: folder})
        spec = WorkloadSpec(
            name=f"dss-jobpool-{config.name}-{secrets.token_hex(4)}",
            image=image,
            command=[self.python, "-u", f"{JOB_DIR}/runner.py", "--wait"],
            labels=labels,
            env={**config.env, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"},
            files={f"{JOB_DIR}/runner.py": await asyncio.to_thread(RUNNER.read_bytes)},
            host_folder=folder,
            host_folder_target=JOB_DIR,
        )
        try:
            workload = await backend.create(spec)
        except BaseException:
            await asyncio.to_thread(transport.remove_folder, folder)
            raise
        runner = Runner(workload, folder, fingerprint)
        self._started[workload.id] = (backend, runner)
        try:
            await self._until_waiting(backend, runner)
        except BaseException:
            await self.discard(backend, runner)
            raise
        self.log.info("dss-containers job pool: %s ready for %r", workload.name, config.name)
        return runner

    async def _until_waiting(self, backend: Backend, runner: Runner) -> None:
        """Until the runner has made its pipe (it then blocks on it); its container's end
        or ``ready_timeout`` fail it, saying which."""
        deadline = time.monotonic() + self.ready_timeout
        checks = 0
        while not await asyncio.to_thread(_waiting, runner.folder):
            checks += 1
            if checks % 10 == 0:
                status = await backend.status(runner.workload.id)
                if not status.running:
                    tail = await backend.logs(runner.workload.id, tail=10)
                    raise BackendError(
                        f"pooled job runner {runner.workload.name} "
                        f"{status.reason or status.state}: {tail.strip()[-500:]}"
                    )
            if self._stopped:
                raise BackendError(f"pooled job runner {runner.workload.name}: pool stopped")
            if time.monotonic() > deadline:
                raise BackendError(
                    f"pooled job runner {runner.workload.name} not waiting after "
                    f"{self.ready_timeout:g} s"
                )
            await asyncio.sleep(0.02)

    async def discard(self, backend: Backend, runner: Runner) -> None:
        """Remove a runner and its folder; one that cannot be removed now (no thread to
        run in: the process exits) stays for :meth:`stop`."""
        try:
            await backend.remove(runner.workload.id)
            await asyncio.to_thread(transport.remove_folder, runner.folder)
        except BackendError as exc:
            name = runner.workload.name
            self.log.warning("dss-containers job pool: cannot remove %s: %s", name, exc)
        except RuntimeError:  # executors shut down at exit: stop() removes it
            return
        self._started.pop(runner.workload.id, None)

    async def stop(self) -> None:
        """Stop refilling and remove every runner not handed to a job."""
        self._stopped = True  # a start in flight ends and removes its runner (not cancelled:
        # a container the daemon creates after a cancellation would be nobody's)
        await asyncio.gather(*self._fills.values(), return_exceptions=True)
        self._ready.clear()
        for backend, runner in list(self._started.values()):
            await self.discard(backend, runner)


async def _alive(backend: Backend, runner: Runner) -> bool:
    status = await backend.status(runner.workload.id)
    return status.running and await asyncio.to_thread(_waiting, runner.folder)


def pooled_request(request: JobRequest) -> bool:
    """Jobs a runner can take: Python runner jobs on the config's own image (an R job runs
    Rscript; a code environment's image is another image: both start cold, as kernels in
    a code environment do)."""
    return request.kind != "r" and request.code_env is None


async def cold_folder(backend: Backend, config: ExecutionConfig, spec: WorkloadSpec) -> str | None:
    """Give a cold job the same kind of private host folder at its job folder (a local
    daemon, a root server that can hand it to any container user, no scratch folder to
    make in the container): its files are written there instead of a ``put_archive``.
    The folder (its path is also in a label, for the reaper) or None."""
    if os.geteuid() != 0 or spec.scratch_dirs or spec.host_folder:
        return None
    from ..backends.docker import DockerBackend

    if not isinstance(backend, DockerBackend) or not transport.is_local_daemon(config):
        return None
    try:
        folder = await asyncio.to_thread(transport.new_folder)
    except OSError:
        return None  # then copied in, as elsewhere
    spec.host_folder, spec.host_folder_target = folder, JOB_DIR
    spec.labels[transport.FOLDER_LABEL] = folder
    return folder


async def start_pooled(
    pool: JobPool, backend: Backend, config: ExecutionConfig, job: Job, spec: WorkloadSpec
) -> tuple[Workload, str] | None:
    """The job of ``spec`` started in a pooled runner: (its workload, its folder), or None
    (no runner ready, a job that needs another image or command, more than the job
    folder, or a workspace mount: it starts cold). A Python job on the config's image
    refills the pool whichever way it starts."""
    if not pooled_request(job.request):
        return None
    image = job.image
    files = in_job_folder(spec.files)
    if files is not None:
        files.pop("runner.py", None)  # the runner runs already
    plan = spec.workspace
    if files is None or (plan is not None and plan.mounted):
        pool.refill(config, image, backend)
        return None
    runner = await pool.take(config, image, backend)
    if runner is None:
        return None
    try:
        await asyncio.to_thread(hand_over, runner.folder, files)
    except OSError as exc:
        pool.log.warning("dss-containers job pool: %s not used: %s", runner.workload.name, exc)
        await pool.discard(backend, runner)
        return None
    return runner.workload, runner.folder
