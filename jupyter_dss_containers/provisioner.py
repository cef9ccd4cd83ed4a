"""The kernel provisioner: a jupyter_client kernel inside a container from an execution config.

Connection info (ports and HMAC key) is decided here, on the host. The container gets it
as a private file written into it before it starts, never through environment variables
or labels; the server reaches the kernel on ports published on 127.0.0.1 (local daemon) or
on the daemon host's address (remote daemon).
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Float, Integer, Unicode

from . import images, ownership
from .backends import Backend, BackendError, BackendUnavailable, ImageMissing, backend_for
from .backends.base import WorkloadStatus
from .config import ConfigFile, ExecutionConfig, load_config
from .errors import ReportedError
from .launcher import FIRST_CONTAINER_PORT, KernelLaunch, LaunchedKernel, launch_kernel_workload
from .liveness import deferred_removals, kernel_ports_answer
from .permissions import PermissionDenied, check_permission, current_identity
from .pool import warm_pool


class KernelStartError(ReportedError, RuntimeError):
    """The container kernel could not start; the message says why."""

    status = 503


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
        """Check permission and resolve the image; the command runs inside the container."""
        config_file, config = await self._load()
        identity = current_identity(config_file)
        check_permission(identity, config)
        self.owner = identity.username
        # hashing a base image spec reads apt sources and wheelhouse folders: not on the loop
        self.image = await asyncio.to_thread(
            images.resolve_image, config_file, config, self.code_env
        )
        self._base_image = config_file.base_image_of(config)
        _provision_curve_keys(self.parent)
        kwargs = await super().pre_launch(**kwargs)
        # The host's environment never reaches the container: only the config's and the spec's.
        env = dict(config.env)
        env.update(self.kernel_spec.env if self.kernel_spec else {})
        kwargs["env"] = env
        argv = list(self.kernel_spec.argv) if self.kernel_spec else []
        kwargs["cmd"] = argv  # the launcher puts the in-container connection file path in
        self._language = (self.kernel_spec.language or "").lower() if self.kernel_spec else ""
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        config = self._config
        assert config is not None
        km = self.parent
        pooled = None
        plain = not _curve_keys(km)  # pooled kernels have no CurveZMQ keys
        if plain and not self._host_ports and self.code_env is None and self._language == "python":
            pooled = await warm_pool().take(config, self.image)
        if pooled is not None:
            launched = pooled
        else:
            launched = await self._launch_cold(config, km, cmd, kwargs.get("env", {}))
        self.workload_id = launched.workload_id
        self.exit_reason = None
        self._stopping = False
        self._host_ports, self._host_ports_of = launched.host_ports, config.name
        self.connection_info = launched.connection_info
        if pooled is not None:
            ownership.this_process().adopt(launched.workload_id)
        self.log.info(
            "Kernel %s runs in %s container %s (config %r, image %s) at %s",
            self.kernel_id,
            "a pooled" if pooled is not None else "a new",
            launched.name,
            config.name,
            self.image,
            launched.connection_info["ip"],
        )
        return self.connection_info

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
            curve=_curve_keys(km),
            host_ports=self._host_ports if self._host_ports_of == config.name else {},
            first_container_port=self.first_container_port,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.restart_wait_seconds if self._restarting else 0.0)
        self._restarting = False  # used up by this launch
        while True:
            try:
                return await launch_kernel_workload(self.backend, launch)
            except BackendUnavailable as exc:
                if loop.time() >= deadline:
                    raise KernelStartError(self._explain_start_failure(exc)) from None
                self.log.warning(
                    "Kernel %s: restart waits for its daemon (%.0f s left): %s",
                    self.kernel_id,
                    deadline - loop.time(),
                    exc,
                )
                await asyncio.sleep(1.0)
            except BackendError as exc:
                raise KernelStartError(self._explain_start_failure(exc)) from None

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
        if self.workload_id is None:
            return
        workload_id, self.workload_id = self.workload_id, None
        try:
            await self.backend.remove(workload_id)
        except BackendUnavailable as exc:
            self.log.warning(
                "Kernel %s: removal of %s deferred: %s", self.kernel_id, workload_id, exc
            )
            deferred_removals.add(self.backend, workload_id, self.log)
            return
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


def _provision_curve_keys(km: Any) -> None:
    """CurveZMQ server keys when the kernel manager asks for transport encryption.

    jupyter_client (>= 8.10) leaves this to provisioners; like its local one, keys are made
    once and kept across restarts (as the HMAC key is).
    """
    policy_of = getattr(km, "_transport_encryption_policy", None)
    if policy_of is None or policy_of() == "disabled":
        return
    if policy_of() == "auto" and not km._kernel_supports_curve_encryption():
        return
    if km.curve_publickey is None:
        import zmq

        km.curve_publickey, km.curve_secretkey = zmq.curve_keypair()


def _curve_keys(km: Any) -> dict[str, str]:
    """CurveZMQ keys when the kernel manager encrypts transport (jupyter_client >= 8.10)."""
    public, secret = getattr(km, "curve_publickey", None), getattr(km, "curve_secretkey", None)
    if public is None or secret is None:
        return {}
    return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}


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
