"""The Docker backend: each workload is one container, through the docker SDK.

The I/O only: it inspects the image (its user, its HOME), finds the isolated network,
prepares the kernel's folder on this host, then creates the container from
:func:`.containers.create_args`, copies the private files in and starts it. Every call runs
in a worker thread (:mod:`.client`); the daemon's answers are read by :mod:`.state`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import docker
import docker.errors

from ... import phases, transport
from ...config import ExecutionConfig
from ...ownership import JOB_ID, KERNEL_ID
from ..base import (
    Backend,
    BackendError,
    ImageMissing,
    Workload,
    WorkloadSpec,
    WorkloadStats,
    WorkloadStatus,
)
from . import client as dc
from . import gpualloc, state
from .containers import (
    container_user,
    create_args,
    image_home,
    image_user,
    mounted_plan,
    needs_image_user,
)
from .files import files_root, private_tar, split_files
from .network import (
    ISOLATED_NETWORK,
    check_binding,
    connect_address,
    forget_network,
    isolated_network,
)


class DockerBackend(Backend):
    """Containers on the Docker (or Docker-API compatible) daemon a config names."""

    def __init__(self, config: ExecutionConfig):
        super().__init__(config)
        self.settings = config.docker
        self.url = dc.daemon_url(self.settings)
        self._image_users: dict[str, str] = {}
        self._last_cpu: dict[str, tuple[int, int]] = {}
        #: starts waiting for GPUs (phase, message), and how long finished ones waited
        self._phases: dict[str, tuple[str, str]] = {}
        self._gpu_waited: dict[str, float] = {}

    def client(self) -> docker.DockerClient:
        """The daemon's SDK client (dials it the first time: call it in a thread)."""
        return dc.docker_client(self.settings)

    async def _api(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await dc.api_call(self.settings, method, *args, **kwargs)

    @property
    def connect_address(self) -> str:
        """Where the Jupyter server dials published ports."""
        return connect_address(self.settings, self.url)

    def target_key(self) -> tuple[str, ...]:
        return ("docker", self.url, repr(self.settings.tls))

    # ------------------------------------------------------------------ create

    async def create(self, spec: WorkloadSpec) -> Workload:
        if not self.settings.allocates_gpus:
            return await self.create_now(spec)
        key = spec.labels.get(KERNEL_ID) or spec.labels.get(JOB_ID) or spec.name
        queue = self.settings.gpu_on_busy == "queue"
        try:
            workload, waited = await gpualloc.line_for(self.url).run(
                lambda: self.create_now(spec),
                self.settings.gpu_wait if queue else 0.0,
                lambda message: self.report_phase(key, phases.QUEUED, message),
            )
        finally:
            self._phases.pop(key, None)
        if waited > 0.5 and KERNEL_ID in spec.labels:  # asked once, by the kernel start
            self._gpu_waited[key] = waited
        return workload

    async def create_now(self, spec: WorkloadSpec) -> Workload:
        """Create it now: :class:`.gpus.GPUsBusy` when its GPUs are not free (no waiting)."""
        if spec.ports and self.settings.network != "host":
            check_binding(self.settings, self.url)
        if self.settings.allocates_gpus:
            return await dc.call(self.settings, self._create_with_gpus, spec)
        return await dc.call(self.settings, self._create_sync, spec)

    def start_progress(self, key: str) -> tuple[str, str] | None:
        """("queued", why and where in line) while the start of ``key`` waits for GPUs."""
        return self._phases.get(key)

    def report_phase(self, key: str, phase: str, message: str) -> None:
        """Where the start of ``key`` is, for :meth:`start_progress` and the phase board."""
        self._phases[key] = (phase, message)
        phases.BOARD.enter(key, phase, message)

    def infrastructure_wait(self, key: str) -> float:
        """Seconds the last start of ``key`` waited for GPUs: not the kernel's time."""
        return self._gpu_waited.pop(key, 0.0)

    def _create_with_gpus(self, spec: WorkloadSpec) -> Workload:
        """Free GPUs, then the container holding them; again when another server's
        container, created first, holds one of them (:func:`.gpualloc.confirm`)."""
        client = self.client()
        lost = ""
        for _ in range(5):
            ids = gpualloc.allocate(client, self.settings, self.url, spec.image)
            try:
                return self._create_sync(spec, ids)
            except gpualloc.LostRace as exc:
                lost = str(exc)
        raise BackendError(f"the Docker daemon at {self.url}: GPUs kept going to others: {lost}")

    def _create_sync(self, spec: WorkloadSpec, gpu_ids: tuple[str, ...] = ()) -> Workload:
        try:
            return self._create_once(spec, gpu_ids)
        except docker.errors.NotFound as exc:
            if ISOLATED_NETWORK not in str(exc):
                raise
            forget_network(self.url)  # removed by hand meanwhile: make it again
            return self._create_once(spec, gpu_ids)
        except docker.errors.APIError as exc:
            if not spec.host_ports or "port is already allocated" not in str(exc):
                raise
        # the previous host ports were taken meanwhile: let the daemon choose new ones
        spec.host_ports = {}
        return self._create_once(spec, gpu_ids)

    def _create_once(self, spec: WorkloadSpec, gpu_ids: tuple[str, ...] = ()) -> Workload:
        client = self.client()
        key = phases.key_of(spec.labels, spec.name)
        self._pull_if_registry_has_it(client, spec.image, key)
        phases.BOARD.enter(key, phases.STARTING, f"creating container {spec.name}")
        plan = mounted_plan(spec)
        image_users, home = self._image_facts(client, spec)
        user = container_user(self.settings, plan.user if plan else None, image_users)
        files, in_folder = split_files(self.config, spec)
        if spec.host_folder:
            try:
                transport.prepare_folder(spec.host_folder, user, in_folder)
            except OSError as exc:
                raise BackendError(f"execution config {self.config.name!r}: {exc}") from None
        network = None if self.settings.network else isolated_network(client, self.url)
        args = create_args(
            self.config,
            spec,
            api_version=client.api.api_version,
            user=user,
            image_home=home,
            network=network,
            gpu_ids=gpu_ids,
        )
        try:
            container = client.api.create_container(**args)["Id"]
        except docker.errors.ImageNotFound:
            raise self._missing(spec.image) from None
        try:
            if gpu_ids:  # before it starts: a lost race leaves nothing running
                gpualloc.confirm(client.api, container, gpu_ids)
            self._check_gpus(client, container)
            if files:
                root = files_root(self.config)
                tar = private_tar(files, user, root, spec.scratch_dirs)
                dc.put_archive(client.api, container, root, tar)
            client.api.start(container)
        except BaseException:
            client.api.remove_container(container, force=True, v=True)
            raise
        return Workload(id=container, name=spec.name, labels=spec.labels, image=spec.image)

    def _image_facts(
        self, client: docker.DockerClient, spec: WorkloadSpec
    ) -> tuple[str | None, str | None]:
        """(the image's user if the container's depends on it, its HOME under a read-only
        root): one inspect at most, the user remembered per image."""
        want_user = needs_image_user(self.settings, spec)
        read_only = self.config.read_only_root
        if not read_only and (not want_user or spec.image in self._image_users):
            return self._image_users.get(spec.image) if want_user else None, None
        try:
            attrs = client.api.inspect_image(spec.image)
        except docker.errors.ImageNotFound:
            raise self._missing(spec.image) from None
        if want_user:
            self._image_users.setdefault(spec.image, image_user(attrs))
        user = self._image_users[spec.image] if want_user else None
        return user, image_home(attrs) if read_only else None

    def _check_gpus(self, client: docker.DockerClient, container: str) -> None:
        """Podman 4's Docker API drops device requests: a GPU config would run on CPU."""
        if self.settings.gpus is None or self.settings.gpu_request != "device_request":
            return
        if not client.api.inspect_container(container)["HostConfig"].get("DeviceRequests"):
            raise BackendError(
                f"the daemon at {self.url} ignored the GPU request (gpus: "
                f"{self.settings.gpus}); Podman's Docker API does not pass GPUs through, "
                "use a Docker engine with the NVIDIA runtime for this config"
            )

    def _pull_if_registry_has_it(
        self, client: docker.DockerClient, image: str, key: str = ""
    ) -> None:
        """A daemon without the image pulls it from the config's registry (remote daemons)."""
        registry_url = (self.config.registry or "").strip().rstrip("/")
        if not registry_url or not image.startswith(registry_url + "/"):
            return
        try:
            client.api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            pass
        from ...images.registry import RegistryError, pull_image

        phases.BOARD.enter(key, phases.PULLING, f"pulling image {image} from {registry_url}")
        try:
            pull_image(client, image)
            size = client.api.inspect_image(image).get("Size")
            if size:
                phases.BOARD.note(key, f"pulled image {image} ({phases.format_bytes(size)})")
        except RegistryError as exc:
            raise ImageMissing(
                f"image {image} is not on the Docker daemon at {self.url} and the pull failed: "
                f"{exc}"
            ) from None

    def _missing(self, image: str) -> ImageMissing:
        return ImageMissing(f"image {image} is not on the Docker daemon at {self.url}")

    # ------------------------------------------------------------------ lifecycle

    async def endpoints(
        self, workload_id: str, ports: tuple[int, ...]
    ) -> tuple[str, dict[int, int]]:
        if self.settings.network == "host":
            return self.connect_address, {p: p for p in ports}
        attrs = await self._api("inspect_container", workload_id)
        return self.connect_address, state.host_ports(attrs, ports, workload_id)

    async def status(self, workload_id: str) -> WorkloadStatus:
        try:
            attrs = await self._api("inspect_container", workload_id)
        except docker.errors.NotFound:
            return WorkloadStatus("missing", exit_code=-1, reason="the container was removed")
        return state.workload_status(attrs)

    async def signal(self, workload_id: str, signum: int) -> None:
        try:
            await self._api("kill", workload_id, signal=int(signum))
        except docker.errors.NotFound:
            pass
        except BackendError as exc:
            if "is not running" not in str(exc):
                raise

    async def stop(self, workload_id: str, grace_seconds: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            await self._api("stop", workload_id, timeout=int(grace_seconds))
        gpualloc.wake(self.url)

    async def remove(self, workload_id: str) -> None:
        self._last_cpu.pop(workload_id, None)
        try:
            await self._api("remove_container", workload_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except BackendError as exc:
            if "is already in progress" not in str(exc):
                raise
        gpualloc.wake(self.url)

    async def logs(self, workload_id: str, tail: int = 50) -> str:
        try:
            raw = await self._api("logs", workload_id, tail=tail)
        except docker.errors.NotFound:
            return ""
        return raw.decode("utf-8", errors="replace")

    async def stats(self, workload_id: str) -> WorkloadStats:
        try:
            raw = await self._api("stats", workload_id, stream=False, one_shot=True)
        except docker.errors.NotFound:
            return WorkloadStats(None, None, None)
        total, percent = state.cpu_total(raw), None
        if total is not None:
            sample = (total, time.monotonic_ns())
            percent = state.cpu_percent(self._last_cpu.get(workload_id), sample)
            self._last_cpu[workload_id] = sample
        limit = (raw.get("memory_stats") or {}).get("limit")
        return WorkloadStats(percent, state.memory_usage(raw), limit)

    async def list(self, labels: dict[str, str]) -> list[Workload]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        return state.workloads(await self._api("containers", all=True, filters=filters))

    def follow_logs(self, workload_id: str) -> AsyncIterator[tuple[str, str]]:
        return dc.follow_logs(self.settings, workload_id)

    async def read_files(
        self, workload_id: str, path: str, limit: int | None = None
    ) -> dict[str, bytes]:
        def read() -> dict[str, bytes]:
            return dc.read_archive(self.client().api, workload_id, path, limit)

        return await dc.call(self.settings, read)

    async def check(self) -> dict[str, str]:
        return state.engine_info(await self._api("version"), self.url)
