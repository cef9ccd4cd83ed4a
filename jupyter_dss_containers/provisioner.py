"""The kernel provisioner: a jupyter_client kernel inside a container from an execution config.

Connection info (sockets and HMAC key) is decided here, on the host. The container gets it
as a private file, never through environment variables or labels: on a local daemon the
kernel binds ipc sockets in its private folder (see :mod:`.transport`), elsewhere it
listens on TCP, encrypted with CurveZMQ where the image supports it, on ports published on
127.0.0.1 (local daemon) or on the daemon host's address (remote daemon).

A start is transactional: a kernel id that is not a UUID is refused before anything is
made, and a failure once the workload exists removes it (and its folder) before the error
is raised.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Float, Integer, Unicode

from . import images, ownership, transport
from .backends import Backend, BackendError, BackendUnavailable, ImageMissing, backend_for
from .backends.base import WorkloadStatus
from .config import ConfigFile, ExecutionConfig, load_config
from .errors import ReportedError
from .launcher import (
    FIRST_CONTAINER_PORT,
    KernelLaunch,
    LaunchedKernel,
    launch_kernel_workload,
    remove_kernel_workload,
)
from .liveness import deferred_removals, kernel_ports_answer
from .permissions import PermissionDenied, check_permission, current_identity
from .pool import warm_pool
from .workspace import WorkspaceError, WorkspacePlan, notice_script, resolve_plan


class WorkspaceRefused(ReportedError, PermissionError):
    """The notebook's folder is not one the kernel may mount (outside the root, a link out)."""

    status = 403


class KernelStartError(ReportedError, RuntimeError):
    """The container kernel could not start; the message says why."""

    status = 503


class KernelIdRefused(ReportedError, ValueError):
    """A kernel id that is not of jupyter_server's shape (a UUID): nothing was started."""

    status = 400


#: jupyter_server's kernel ids: what its routes accept (``\w+-\w+-\w+-\w+-\w+``) and
#: ``uuid4()`` makes, in the hex digits a UUID has
_KERNEL_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def check_kernel_id(kernel_id: Any) -> None:
    """Refuse (400) a kernel id that is not a UUID, before it names a file or container."""
    if isinstance(kernel_id, str) and _KERNEL_ID.fullmatch(kernel_id):
        return
    shown = (
        repr(kernel_id[:40]) + ("..." if len(kernel_id) > 40 else "")
        if isinstance(kernel_id, str)
        else type(kernel_id).__name__
    )
    raise KernelIdRefused(
        f"kernel id {shown} is not a UUID (the kernel id shape of jupyter_server): "
        "nothing was started"
    )


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
        120.0, config=True, help="Seconds to wait for the container to run before giving up."
    )
    stop_grace_seconds = Float(
        5.0, config=True, help="Seconds between SIGTERM and SIGKILL when a kernel is stopped."
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
    owner: str | None = None
    image: str | None = None
    _backend: Backend | None = None
    _config: ExecutionConfig | None = None
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
        config_file, config = await self._load()
        identity = current_identity(config_file)
        check_permission(identity, config)
        self.owner = identity.username
        # hashing a base image spec reads apt sources and wheelhouse folders: not on the loop
        self.image = await asyncio.to_thread(
            images.resolve_image, config_file, config, self.code_env
        )
        self._base_image = config_file.base_image_of(config)
        self._workspace = await self._plan_workspace(config, identity.username, kwargs.get("cwd"))
        self._transport = transport.resolve(config)
        transport.provision_curve_keys(
            self.parent, tcp=self._transport == "tcp" and self.encrypt_tcp
        )
        kwargs = await super().pre_launch(**kwargs)
        # The host's environment never reaches the container: only the config's and the spec's.
        env = dict(config.env)
        env.update(self.kernel_spec.env if self.kernel_spec else {})
        kwargs["env"] = env
        argv = list(self.kernel_spec.argv) if self.kernel_spec else []
        self._language = (self.kernel_spec.language or "").lower() if self.kernel_spec else ""
        said = self._launched  # told once, at the kernel's first start (not after restarts)
        if (
            self._workspace.notice
            and not said
            and self._language == "python"
            and "ipykernel" in str(argv)
        ):
            argv.append(f"--IPKernelApp.exec_lines={notice_script(self._workspace.notice)}")
        kwargs["cmd"] = argv  # the launcher puts the in-container connection file path in
        return kwargs

    async def _plan_workspace(
        self, config: ExecutionConfig, username: str, cwd: str | None
    ) -> WorkspacePlan:
        """The user's files in the kernel: the server's root (the user's own on a
        multi-user server; the working folder outside a server) at the same path, the
        notebook's folder as the working directory."""
        mapping = getattr(self.parent, "parent", None)  # the server's kernel manager, if any
        root_of = getattr(mapping, "workspace_root", None)
        root = root_of() if callable(root_of) else getattr(mapping, "root_dir", None)
        try:
            return await asyncio.to_thread(
                resolve_plan,
                config.workspace,
                backend=config.backend,
                remote=config.backend == "docker" and config.docker.is_remote,
                server_root=root if isinstance(root, str) and root else None,
                cwd=cwd,
                user=username,
                config_name=config.name,
            )
        except (WorkspaceError, OSError) as exc:
            raise WorkspaceRefused(f"execution config {config.name!r}: {exc}") from None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        config = self._config
        assert config is not None
        km = self.parent
        pooled = None
        if (
            not self._launched
            and self.code_env is None
            and self._language == "python"
            and not self._workspace.mounted  # a pooled kernel was started for nobody's files
        ):
            pooled = await warm_pool().take(
                config, self.image, curve=bool(transport.curve_keys(km))
            )
        if pooled is not None:
            launched = pooled
        else:
            launched = await self._launch_cold(config, km, cmd, kwargs.get("env", {}))
        self.workload_id = launched.workload_id
        self.exit_reason = None
        self._stopping = False
        self._launched = True
        self._host_ports, self._host_ports_of = launched.host_ports, config.name
        self._kernel_folder = launched.folder
        self.connection_info = launched.connection_info
        if pooled is not None:
            ownership.this_process().adopt(launched.workload_id)
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
        return self.connection_info

    async def _hand_to_manager(self, km: Any, launched: LaunchedKernel) -> None:
        """Write the server's connection file here (jupyter_client would do it next, on the
        event loop) so that a failure to write it removes the workload before it is raised;
        and remove the workload, too, when anything later fails the start."""
        try:
            await asyncio.to_thread(_adopt_connection_info, km, launched.connection_info)
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
            try:
                await remove_kernel_workload(self.backend, workload_id, folder)
            except BackendError as exc:
                self.log.warning("Kernel %s: removal deferred: %s", self.kernel_id, exc)
                deferred_removals.add(self.backend, workload_id, self.log)
            ownership.this_process().release(workload_id)

    async def _launch_cold(
        self, config: ExecutionConfig, km: Any, cmd: list[str], env: dict[str, str]
    ) -> LaunchedKernel:
        ownership.this_process().register()
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
            host_ports=self._host_ports if self._host_ports_of == config.name else {},
            first_container_port=self.first_container_port,
            folder=self._kernel_folder if self._host_ports_of == config.name else None,
            workspace=self._workspace,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.restart_wait_seconds if self._restarting else 0.0)
        self._restarting = False  # used up by this launch
        while True:
            try:
                return await launch_kernel_workload(self.backend, launch)
            except BackendUnavailable as exc:
                if loop.time() >= deadline:
                    await self._forget_folder()
                    raise KernelStartError(self._explain_start_failure(exc)) from None
                self.log.warning(
                    "Kernel %s: restart waits for its daemon (%.0f s left): %s",
                    self.kernel_id,
                    deadline - loop.time(),
                    exc,
                )
                await asyncio.sleep(1.0)
            except BackendError as exc:
                await self._forget_folder()
                raise KernelStartError(self._explain_start_failure(exc)) from None

    async def _forget_folder(self) -> None:
        """A restart that failed for good: its kept folder goes (the next start makes one)."""
        folder, self._kernel_folder = self._kernel_folder, None
        if folder:
            await asyncio.to_thread(transport.remove_folder, folder)

    def _explain_start_failure(self, exc: BackendError) -> str:
        message = f"execution config {self.execution_config!r}: {exc}"
        if isinstance(exc, ImageMissing) and self.code_env:
            message += (
                f"; build it with: jupyter dss-containers build-env {self.code_env}"
                f" --config {self.execution_config}"
            )
        elif isinstance(exc, ImageMissing) and self._base_image is not None:
            message += (
                f"; build it with: jupyter dss-containers build-base-image {self._base_image.name}"
            )
        return message

    # ------------------------------------------------------------------ lifecycle

    async def poll(self) -> int | None:
        if self.workload_id is None:
            return self._last_status.exit_code if self._last_status else 0
        if self.exit_reason is not None and self._last_status is not None:
            code = self._last_status.exit_code  # known dead: a daemon's silence changes nothing
            return code if code is not None else -1
        try:
            status = await self.backend.status(self.workload_id)
        except BackendUnavailable as exc:
            # not proof that the kernel died (live-restore) unless its ports are gone, too
            if self._stopping or await kernel_ports_answer(self.connection_info):
                self.log.warning("Kernel %s: cannot ask the backend: %s", self.kernel_id, exc)
                return None
            status = WorkloadStatus("missing", -1, f"lost: {exc}; its ports no longer answer")
        except BackendError as exc:
            self.log.warning("Kernel %s: cannot ask the backend: %s", self.kernel_id, exc)
            return None
        if status.running:
            return None
        if self.exit_reason is None:
            self._last_status = status
            if self._stopping:  # asked to stop: no need to quote its logs
                self.exit_reason = f"stopped on request ({status.reason})"
                self.log.info("Kernel %s %s", self.kernel_id, self.exit_reason)
            else:
                self.exit_reason = await self._death_message(status)
                self.log.error("Kernel %s stopped: %s", self.kernel_id, self.exit_reason)
        return status.exit_code if status.exit_code is not None else -1

    async def _death_message(self, status: WorkloadStatus) -> str:
        message = (
            f"container kernel (config {self.execution_config!r}) {status.reason or status.state}"
        )
        if status.state != "missing" and self.workload_id:
            try:
                tail = await self.backend.logs(self.workload_id, tail=self.log_tail_lines)
            except BackendError:
                tail = ""
            if tail.strip():
                message += "; last log lines:\n" + tail.rstrip()
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
        if isinstance(info["connection_info"].get("key"), bytes):
            info["connection_info"] = {
                k: v.decode() if isinstance(v, bytes) else v
                for k, v in info["connection_info"].items()
            }
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
            await self._check_owner(workload_id, identity.username, provisioner_info.get("owner"))
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

    async def _check_owner(self, workload_id: str, user: str, recorded: str | None) -> None:
        """Only the user who started a kernel reattaches to it: its container's owner label
        says so, or, for a kernel taken from a warm pool (whose label names nobody), the
        persisted owner."""
        # one label per query: Podman 4 matches nothing for several
        if any(w.id == workload_id for w in await self.backend.list({ownership.OWNER: user})):
            return
        pooled = await self.backend.list({ownership.KIND: "pool"}) if recorded == user else []
        if any(w.id == workload_id for w in pooled):
            return
        raise PermissionDenied(
            f"cannot reattach: kernel {self.kernel_id} (execution config "
            f"{self.execution_config!r}) was started by another user, not {user}"
        )


def _adopt_connection_info(km: Any, info: dict[str, Any]) -> None:
    """Load the kernel's connection info into its manager and write the manager's file
    (blocking), as jupyter_client's ``_reconcile_connection_info`` would; it then finds
    the file written and equal."""
    from jupyter_client.connect import port_names

    km.cleanup_connection_file()  # a restart's stale file, if any
    for name in port_names:
        setattr(km, name, 0)
    km.load_connection_info(info)
    km.write_connection_file()


async def reattach(
    provisioner_info: dict[str, Any], kernel_name: str, **manager_kwargs: Any
) -> Any:
    """A kernel manager connected to a kernel container started by another process.

    ``provisioner_info`` is what :meth:`ContainerProvisioner.get_provisioner_info` returned
    (a server persists it to survive its own restart).
    """
    from jupyter_client import AsyncKernelManager
    from jupyter_client.provisioning import KernelProvisionerFactory

    manager = AsyncKernelManager(kernel_name=kernel_name, **manager_kwargs)
    manager.kernel_id = provisioner_info["kernel_id"]
    provisioner = KernelProvisionerFactory.instance(
        parent=manager.parent
    ).create_provisioner_instance(manager.kernel_id, manager.kernel_spec, parent=manager)
    await provisioner.load_provisioner_info(provisioner_info)
    manager.provisioner = provisioner
    manager.load_connection_info(provisioner_info["connection_info"])
    return manager
