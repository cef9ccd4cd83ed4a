"""The kernel provisioner: a jupyter_client kernel inside a container from an execution config.

Connection info (sockets and HMAC key) is decided here, on the host. The container gets it
as a private file, never through environment variables or labels: on a local daemon the
kernel binds ipc sockets in its private folder (see :mod:`.transport`), elsewhere it
listens on TCP, encrypted with CurveZMQ where the image supports it, on ports published on
127.0.0.1 (local daemon) or on the daemon host's address (remote daemon).

A start is transactional: a kernel id that is not a UUID is refused before anything is
made, and a failure once the workload exists (no kernel_info reply within
``launch_timeout`` included) removes it (and its folder) before the error is raised. The
steps themselves live in :mod:`.kernelstart`, reattaching in :mod:`.kernelreattach`.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Float, Integer, Unicode

from . import images, ownership, phases, transport
from .backends import Backend, BackendError, BackendUnavailable, backend_for
from .backends.base import WorkloadStatus
from .config import ConfigFile, ExecutionConfig, load_config
from .kernelids import KernelIdRefused, check_kernel_id
from .kernelreattach import check_owner, decoded_connection_info, reattach
from .kernelstart import (
    KernelStartError,
    WorkspaceRefused,
    adopt_connection_info,
    kernel_command,
    kernel_language,
    log_tail,
    plan_workspace,
    remove_or_defer,
    start_cold,
)
from .launcher import FIRST_CONTAINER_PORT, KernelLaunch, LaunchedKernel
from .liveness import deferred_removals, kernel_ports_answer
from .permissions import check_permission, current_identity
from .pool import pool_of
from .proxyenv import proxy_variables
from .workspace import WorkspacePlan

__all__ = [
    "ContainerProvisioner",
    "KernelIdRefused",
    "KernelStartError",
    "WorkspaceRefused",
    "check_kernel_id",
    "reattach",
]


class ContainerProvisioner(KernelProvisionerBase):
    """Runs the kernel in a container (Docker) or pod (Kubernetes) built for a config.

    Kernel specs name it ``dss-containers`` with ``{"execution_config": ..., "code_env": ...}``.
    """

    execution_config = Unicode(
        "local", config=True, help="Name of the execution configuration the kernel runs in."
    )
    code_env = Unicode(None, allow_none=True, config=True, help="Code environment, if any.")
    config_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Config file path; default: $DSS_CONTAINERS_CONFIG, then the Jupyter config path.",
    )
    first_container_port = Integer(
        FIRST_CONTAINER_PORT,
        config=True,
        help="Kernel ports inside the container: this one and the next four.",
    )
    launch_timeout = Float(
        120.0,
        config=True,
        help="Seconds a kernel start may take, from creating its container or pod to the "
        "kernel's first kernel_info reply; past it the workload is removed and the start "
        "fails, saying so (a pooled kernel has answered already).",
    )
    stop_grace_seconds = Float(
        5.0,
        config=True,
        help="Seconds a kernel asked to shut down has before SIGKILL (SIGTERM half way), "
        "or the kernel manager's shutdown_wait_time if that is longer.",
    )
    log_tail_lines = Integer(20, config=True, help="Log lines quoted when a kernel dies.")
    encrypt_tcp = Bool(
        True,
        config=True,
        help="CurveZMQ on every kernel reached over TCP whose image declares support (the "
        "base images do), whatever the kernel manager's transport_encryption says (its "
        "'required' still refuses an image without it). Kernels on ipc sockets are private "
        "to this server's user by their folder; they use CurveZMQ when the manager asks.",
    )
    restart_wait_seconds = Float(
        30.0,
        config=True,
        help="When a restart (the automatic one after a kernel died, or one asked for) finds "
        "the daemon or cluster unreachable, keep trying this long: a daemon that restarts "
        "takes its kernels with it and comes back in seconds. A first start fails at once.",
    )

    workload_id: str | None = None
    exit_reason: str | None = None
    #: why the kernel last died by itself ({"reason", "at"}), kept across its restart
    died: dict[str, Any] | None = None
    owner: str | None = None
    image: str | None = None
    _backend: Backend | None = None
    _config: ExecutionConfig | None = None
    _base_image: str | None = None
    _last_status: WorkloadStatus | None = None
    _stopping = False
    _restarting = False
    _language = "python"
    _host_ports: dict[int, int] = {}
    _host_ports_of: str | None = None
    _kernel_folder: str | None = None  # the private folder, kept across restarts
    _launched = False
    _transport = "tcp"
    _workspace = WorkspacePlan()
    _late_removal: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self.workload_id is not None

    @property
    def backend(self) -> Backend:
        assert self._backend is not None, "the provisioner has no backend before pre_launch"
        return self._backend

    async def _load(self) -> tuple[ConfigFile, ExecutionConfig]:
        config_file = await asyncio.to_thread(load_config, self.config_file)
        try:
            config = config_file.get(self.execution_config)
        except KeyError as exc:
            raise KernelStartError(exc.args[0]) from None
        self._config = config
        self._backend = backend_for(config)
        return config_file, config

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Check the kernel id and permission and resolve the image; the command runs
        inside the container."""
        check_kernel_id(self.kernel_id)
        phases.BOARD.begin(self.kernel_id, phases.QUEUED, "checking permission and limits")
        config_file, config = await self._load()
        identity = current_identity(config_file)
        check_permission(identity, config)
        self.owner = identity.username
        # hashing a base image spec reads apt sources and wheelhouse folders: not on the loop
        self.image = await asyncio.to_thread(
            images.resolve_image, config_file, config, self.code_env
        )
        base = config_file.base_image_of(config)
        self._base_image = base.name if base is not None else None
        manager = getattr(self.parent, "parent", None)  # the server's kernel manager, if any
        self._workspace = await plan_workspace(
            config, identity.username, kwargs.get("cwd"), manager
        )
        self._transport = transport.resolve(config)
        transport.provision_curve_keys(
            self.parent, tcp=self._transport == "tcp" and self.encrypt_tcp
        )
        kwargs = await super().pre_launch(**kwargs)
        # The host's environment never reaches the container: only the config's and the spec's.
        spec_env = self.kernel_spec.env if self.kernel_spec else {}
        kwargs["env"] = {**proxy_variables(self), **config.env, **spec_env}
        self._language = kernel_language(self.kernel_spec)
        # the launcher puts the in-container connection file path in
        kwargs["cmd"] = kernel_command(
            self.kernel_spec,
            self._workspace.notice,
            first_start=not self._launched,
            died=self.died["reason"] if self.died and self.exit_reason else None,
        )
        name = getattr(self.parent, "kernel_name", "")  # its owner sees it start from now
        phases.BOARD.claim(self.kernel_id, self.owner, name=name, execution_config=config.name)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        try:
            return await self._launch(cmd, kwargs)
        except BaseException as exc:  # no start is left "starting" in GET kernels
            phases.BOARD.failed(self.kernel_id, f"{type(exc).__name__}: {exc}")
            raise

    async def _launch(self, cmd: list[str], kwargs: dict[str, Any]) -> KernelConnectionInfo:
        config = self._config
        assert config is not None
        km = self.parent
        pooled = await self._take_pooled(config, km)
        launched = pooled or await self._launch_cold(config, km, cmd, kwargs.get("env", {}))
        self.workload_id = launched.workload_id
        self.exit_reason = None
        self._stopping = False
        self._launched = True
        self._host_ports, self._host_ports_of = launched.host_ports, config.name
        self._kernel_folder = launched.folder
        self.connection_info = launched.connection_info
        if pooled is not None:
            ownership.this_process().adopt(launched.workload_id)
            phases.BOARD.enter(self.kernel_id, phases.READY, "a warm kernel from the pool")
        if km is not None:
            await self._hand_to_manager(km, launched)
        self.log.info(
            "Kernel %s runs in %s container %s (config %r, image %s) at %s",
            self.kernel_id,
            "a pooled" if pooled is not None else "a new",
            launched.name,
            config.name,
            self.image,
            transport.connection_summary(launched.connection_info),
        )
        placed = getattr(self.backend, "placed", {}).pop(self.kernel_id, None)
        if placed is not None:  # a config over several daemons (docker.hosts)
            self.log.info("Kernel %s placed on %s", self.kernel_id, placed[1])
        return self.connection_info

    async def _take_pooled(self, config: ExecutionConfig, km: Any) -> LaunchedKernel | None:
        """A running kernel from the server's warm pool, when this start may have one."""
        if self._launched or self.code_env is not None or self._language != "python":
            return None
        if self._workspace.mounted:  # a pooled kernel was started for nobody's files
            return None
        pool = pool_of(self)
        if pool is None:
            return None
        return await pool.take(config, self.image, curve=bool(transport.curve_keys(km)))

    async def _hand_to_manager(self, km: Any, launched: LaunchedKernel) -> None:
        """Write the server's connection file here (jupyter_client would do it next, on the
        event loop) so that a failure to write it removes the workload before it is raised;
        and remove the workload, too, when anything later fails the start."""
        try:
            await asyncio.to_thread(adopt_connection_info, km, launched.connection_info)
        except OSError as exc:
            await self._discard_failed_start()
            raise KernelStartError(
                f"execution config {self.execution_config!r}: cannot write the kernel's "
                f"connection file {km.connection_file}: {exc.strerror or exc}; the container "
                "was removed"
            ) from None
        ready = getattr(km, "_ready", None)  # jupyter_client's future of this start
        if isinstance(ready, asyncio.Future) and not ready.done():
            ready.add_done_callback(self._after_start)

    def _after_start(self, ready: asyncio.Future[Any]) -> None:
        if not ready.cancelled() and ready.exception() is not None and self.workload_id:
            self.log.warning("Kernel %s: start failed late; removing it", self.kernel_id)
            self._late_removal = asyncio.ensure_future(self._discard_failed_start())

    async def _discard_failed_start(self) -> None:
        workload_id, self.workload_id = self.workload_id, None
        folder, self._kernel_folder = self._kernel_folder, None
        if workload_id:
            await remove_or_defer(self.backend, workload_id, folder, self.log)

    async def _launch_cold(
        self, config: ExecutionConfig, km: Any, cmd: list[str], env: dict[str, str]
    ) -> LaunchedKernel:
        """A new workload for this kernel, returned once the kernel answered."""
        ownership.this_process().register()
        same_config = self._host_ports_of == config.name
        launch = KernelLaunch(
            config=config,
            image=self.image,
            command=cmd,
            name=f"dss-kernel-{self.kernel_id[:13]}-{secrets.token_hex(2)}",
            labels=ownership.workload_labels(
                "kernel", config.name, self.owner, kernel_id=self.kernel_id, code_env=self.code_env
            ),
            key=km.session.key if km is not None else secrets.token_hex(32).encode(),
            signature_scheme=km.session.signature_scheme if km is not None else "hmac-sha256",
            env=env,
            kernel_name=self.kernel_spec.display_name if self.kernel_spec else "",
            curve=transport.curve_keys(km),
            host_ports=self._host_ports if same_config else {},
            first_container_port=self.first_container_port,
            folder=self._kernel_folder if same_config else None,
            workspace=self._workspace,
            start_timeout=self.launch_timeout,
        )
        restart_wait = self.restart_wait_seconds if self._restarting else 0.0
        self._restarting = False  # used up by this launch
        try:
            return await start_cold(
                self.backend,
                launch,
                restart_wait=restart_wait,
                timeout=self.launch_timeout,
                code_env=self.code_env,
                base_image=self._base_image,
                log=self.log,
                kernel_id=self.kernel_id,
                tail_lines=self.log_tail_lines,
            )
        except KernelStartError as exc:
            await self._forget_folder()  # a restart's kept folder goes with its failure
            if self.died and self.exit_reason:  # a restart after a death: told as one
                failed = str(exc).splitlines()[0][:500]
                self.died = {
                    "reason": f"{self.died['reason']}; its restart failed: {failed}",
                    "at": time.time(),
                }
            raise

    async def _forget_folder(self) -> None:
        """A restart that failed for good: its kept folder goes (the next start makes one)."""
        folder, self._kernel_folder = self._kernel_folder, None
        if folder:
            await asyncio.to_thread(transport.remove_folder, folder)

    # ------------------------------------------------------------------ lifecycle

    async def poll(self) -> int | None:
        if self.workload_id is None:
            return self._last_status.exit_code if self._last_status else 0
        if self.exit_reason is not None and self._last_status is not None:
            code = self._last_status.exit_code  # known dead: a daemon's silence changes nothing
            return code if code is not None else -1
        status = await self._status_now()
        if status is None or status.running:
            return None
        if self.exit_reason is None:
            self._last_status = status
            if self._stopping:  # asked to stop: no need to quote its logs
                self.exit_reason = f"stopped on request ({status.reason})"
                self.log.info("Kernel %s %s", self.kernel_id, self.exit_reason)
            else:
                self.exit_reason = await self._death_message(status)
                self.died = {"reason": status.reason or status.state, "at": time.time()}
                self.log.error("Kernel %s stopped: %s", self.kernel_id, self.exit_reason)
        return status.exit_code if status.exit_code is not None else -1

    async def _status_now(self) -> WorkloadStatus | None:
        """The workload's state; None when the backend cannot say and the kernel may live."""
        assert self.workload_id is not None
        try:
            return await self.backend.status(self.workload_id)
        except BackendUnavailable as exc:
            # not proof that the kernel died (live-restore) unless its ports are gone, too
            if self._stopping or await kernel_ports_answer(self.connection_info):
                self.log.warning("Kernel %s: cannot ask the backend: %s", self.kernel_id, exc)
                return None
            return WorkloadStatus("missing", -1, f"lost: {exc}; its ports no longer answer")
        except BackendError as exc:
            self.log.warning("Kernel %s: cannot ask the backend: %s", self.kernel_id, exc)
            return None

    async def _death_message(self, status: WorkloadStatus) -> str:
        message = (
            f"container kernel (config {self.execution_config!r}) {status.reason or status.state}"
        )
        if status.state != "missing" and self.workload_id:
            message += await log_tail(self.backend, self.workload_id, self.log_tail_lines)
        return message

    async def wait(self) -> int | None:
        while True:
            code = await self.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.1)

    async def send_signal(self, signum: int) -> None:
        if self.workload_id is None or self.exit_reason is not None:
            return  # nothing alive to signal
        if signum == 0:
            await self.poll()
            return
        try:
            await self.backend.signal(self.workload_id, signum)
        except BackendUnavailable as exc:
            if not getattr(self.parent, "shutting_down", False):
                raise
            # a shutdown goes on while the daemon is down: cleanup() retries the removal
            self.log.warning("Kernel %s: cannot signal it: %s", self.kernel_id, exc)

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._stopping = True

    async def kill(self, restart: bool = False) -> None:
        self._stopping = True
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        self._stopping = True
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the container; a restart then creates a new one for the same kernel id.

        When the daemon is down, the removal is retried in the background until it answers
        again (its stopped containers come back with it): nothing is orphaned.
        """
        self._restarting = restart
        workload_id, self.workload_id = self.workload_id, None
        try:
            if workload_id is not None:
                await self.backend.remove(workload_id)
        except BackendUnavailable as exc:
            self.log.warning(
                "Kernel %s: removal of %s deferred: %s", self.kernel_id, workload_id, exc
            )
            deferred_removals.add(self.backend, workload_id, self.log)
            return
        finally:
            if not restart:  # a restart keeps the folder: the sockets keep their paths
                await self._forget_folder()
                phases.BOARD.forget(self.kernel_id)
        if workload_id is not None:
            ownership.this_process().release(workload_id)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, self.stop_grace_seconds)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return max(recommended, 30.0)

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(
            workload_id=self.workload_id,
            execution_config=self.execution_config,
            code_env=self.code_env,
            config_file=self.config_file,
            owner=self.owner,
            kernel_folder=self._kernel_folder,
        )
        info["connection_info"] = decoded_connection_info(info["connection_info"])
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Reattach to a running kernel container (e.g. after the server restarted)."""
        await super().load_provisioner_info(provisioner_info)
        check_kernel_id(provisioner_info.get("kernel_id"))
        self.execution_config = provisioner_info["execution_config"]
        self.code_env = provisioner_info.get("code_env")
        self.config_file = provisioner_info.get("config_file")
        config_file, config = await self._load()
        identity = current_identity(config_file)
        check_permission(identity, config)
        workload_id = provisioner_info["workload_id"]
        status = await self.backend.status(workload_id)
        if status.state != "missing":  # before any of its log lines are quoted
            what = f"kernel {self.kernel_id} (execution config {self.execution_config!r})"
            recorded = provisioner_info.get("owner")
            await check_owner(self.backend, workload_id, identity.username, recorded, what)
        self.owner, self.workload_id = identity.username, workload_id
        folder = provisioner_info.get("kernel_folder")
        if folder and await asyncio.to_thread(transport.is_kernel_folder, folder):
            self._kernel_folder = folder  # only a folder of ours is ever removed
        self._launched, self._host_ports_of = True, config.name
        if not status.running:
            message = await self._death_message(status)
            self.workload_id = None
            raise KernelStartError(f"cannot reattach: {message}")
        ownership.this_process().adopt(workload_id)
