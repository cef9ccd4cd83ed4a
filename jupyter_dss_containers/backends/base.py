"""The one interface every backend (Docker, Kubernetes) implements.

A *workload* is one container or pod running one kernel or job. The provisioner and the
job service only speak this interface, so they do not change between backends.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..config import ExecutionConfig
from ..imagecontract import KERNEL_FOLDER
from ..workspace import WorkspacePlan


class BackendError(RuntimeError):
    """A backend failure, with a message that says why (never just a timeout)."""


class BackendUnavailable(BackendError):
    """The daemon or cluster cannot be reached."""


class ImageMissing(BackendError):
    """The image is not where the workload must run."""


class FilesTooLarge(BackendError):
    """A workload left more bytes under a path than the reader would take."""


@dataclass
class WorkloadSpec:
    """Everything needed to create one container or pod."""

    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    #: private files (absolute path in the workload -> bytes), readable only by its user;
    #: never passed through environment variables or labels
    files: dict[str, bytes] = field(default_factory=dict)
    #: ports inside the workload that the Jupyter server must reach
    ports: tuple[int, ...] = ()
    #: host ports to reuse for those ports (a restarted kernel keeps its address, so
    #: clients connected to it reconnect); the backend picks free ones if these are taken
    host_ports: dict[int, int] = field(default_factory=dict)
    working_dir: str | None = None
    #: a private folder on the daemon's host (a local daemon only), mounted read-write at
    #: ``host_folder_target`` and given to the workload's user; the private files under
    #: that target are written into it instead of being copied in (a kernel's ipc sockets
    #: and connection file live there)
    host_folder: str | None = None
    host_folder_target: str = KERNEL_FOLDER
    #: the user's files it sees (a mount at the same path as on the server, or nothing)
    #: and the uid:gid it then runs as (see :mod:`..workspace`)
    workspace: WorkspacePlan | None = None
    #: empty folders the workload's user may write, at these absolute paths (a job's
    #: working-folder snapshot lands in one): an emptyDir on Kubernetes, a folder of the
    #: user's copied in on Docker (under /tmp only with ``read_only_root``)
    scratch_dirs: tuple[str, ...] = ()
    #: seconds the backend may wait for the workload to run, where it waits (a pod being
    #: scheduled and pulled); None: the backend's default
    start_timeout: float | None = None


@dataclass
class Workload:
    """A created workload, as the backend lists it."""

    id: str
    name: str
    labels: dict[str, str]
    image: str = ""
    state: str = "unknown"
    started_at: str | None = None


@dataclass
class WorkloadStatus:
    """Whether a workload runs, and if not, why it stopped."""

    state: str  # "pending", "running", "exited" or "missing"
    exit_code: int | None = None
    reason: str | None = None
    oom_killed: bool = False

    @property
    def running(self) -> bool:
        return self.state in ("pending", "running")


@dataclass
class WorkloadStats:
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit: int | None


class Backend(ABC):
    """Create, watch, signal, stop and remove workloads for one execution config."""

    #: private files arrive read-only (a Kubernetes Secret volume): a kernel that rewrites
    #: its connection file (ipykernel does with CurveZMQ keys) needs a writable copy
    read_only_files = False

    def __init__(self, config: ExecutionConfig):
        self.config = config

    def start_progress(self, key: str) -> tuple[str, str] | None:
        """(phase, message) of the start of kernel or job ``key`` while the backend waits
        for it (a pod waiting for a new node, say); None where the backend does not say."""
        return None

    def infrastructure_wait(self, key: str) -> float:
        """Seconds the last start of kernel or job ``key`` waited for infrastructure (a
        node an autoscaler added), which its launch timeout does not count; asked once."""
        return 0.0

    @abstractmethod
    def target_key(self) -> tuple[str, ...]:
        """Identifies the daemon or cluster, so that shared ones are visited once."""

    @abstractmethod
    async def create(self, spec: WorkloadSpec) -> Workload:
        """Create and start a workload; raise :class:`BackendError` with the reason."""

    @abstractmethod
    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        """The address to connect to and, for each workload port, the port to dial there."""

    @abstractmethod
    async def status(self, workload_id: str) -> WorkloadStatus: ...

    @abstractmethod
    async def signal(self, workload_id: str, signum: int) -> None: ...

    @abstractmethod
    async def stop(self, workload_id: str, grace_seconds: float) -> None: ...

    @abstractmethod
    async def remove(self, workload_id: str) -> None:
        """Remove the workload and whatever was created with it; a missing one is fine."""

    @abstractmethod
    async def logs(self, workload_id: str, tail: int = 50) -> str: ...

    @abstractmethod
    async def stats(self, workload_id: str) -> WorkloadStats: ...

    @abstractmethod
    async def list(self, labels: dict[str, str]) -> list[Workload]:
        """Workloads carrying all the given labels."""

    @abstractmethod
    async def check(self) -> dict[str, str]:
        """Reach the daemon or cluster and say what answered (``doctor``, the Test button)."""

    # Jobs run to completion and hand back output: these two have defaults so that a
    # backend without them still runs kernels; the job service needs both.

    def follow_logs(self, workload_id: str) -> AsyncIterator[tuple[str, str]]:
        """Yield ``("stdout" | "stderr", text)`` as the workload writes, until it exits."""
        raise BackendError(f"{type(self).__name__} cannot stream a workload's output")

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        """Regular files under ``path`` in a (stopped) workload, keyed by their path relative
        to ``path``'s parent folder (``result.json``, ``out/a.csv``); {} when it is absent.
        More than ``limit`` bytes there raise :class:`FilesTooLarge` before they are all
        read (the workload's files are its user's: they must not fill our memory)."""
        raise BackendError(f"{type(self).__name__} cannot read files out of a workload")
