"""Warm pools: kernels already running in containers, handed over on kernel start.

A config with ``warm_pool: {size: N}`` keeps N kernel containers started ahead of time.
A pooled kernel belongs to nobody until a kernel start takes it (after the permission
check), is used once, and is removed with its kernel: it never returns to the pool, so
nothing of one user's session can reach another's. Each pooled kernel has its own HMAC
key (and, on TCP, its own CurveZMQ keys) and its own socket folder (on ipc), which the
kernel manager adopts with the connection info. A pool follows the config
file: a changed config (image, resources, ...) drains its stale kernels, a removed one its
whole pool; pool containers carry the server's labels and are reaped with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import Any

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from . import images, ownership, transport
from .backends import BackendError, backend_for
from .config import ConfigFile, ExecutionConfig, load_config
from .kernelspecs import PYTHON_ARGV
from .launcher import (
    KernelLaunch,
    LaunchedKernel,
    launch_kernel_workload,
    remove_kernel_workload,
)
from .readiness import KernelNotReady, until_ready


def config_fingerprint(config: ExecutionConfig, image: str) -> str:
    """What a pooled kernel was started for: a change means it is stale (the settings
    themselves count too: the file's default limits may have changed)."""
    return json.dumps([config.raw, image, repr(config.docker)], sort_keys=True, default=str)


class WarmPool(LoggingConfigurable):
    """Pre-started kernel containers per execution config (Python kernels, no code env)."""

    config_file = Unicode(None, allow_none=True, config=True, help="Config file to follow.")
    ready_timeout = Float(
        120.0,
        config=True,
        help="Seconds a pooled kernel may take to answer kernel_info; one that does not is "
        "removed and the failure logged (the pool tries again at the next refill).",
    )
    refill_interval = Float(
        5.0, config=True, help="Seconds between checks of the config file and pool sizes."
    )

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)
        #: config name -> [(fingerprint, kernel)], oldest first
        self._ready: dict[str, list[tuple[str, LaunchedKernel]]] = {}
        self._filling: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: config name -> why its last refill failed (cleared by one that succeeds)
        self._failures: dict[str, str] = {}

    # ------------------------------------------------------------------ hand-over

    async def take(
        self, config: ExecutionConfig, image: str, curve: bool = False
    ) -> LaunchedKernel | None:
        """A running kernel for this config (None when its pool is empty or off, or when
        ``curve`` asks for CurveZMQ and the pool's kernels have none: ipc ones)."""
        if config.warm_pool_size <= 0:
            return None
        wanted = config_fingerprint(config, image)
        entries = self._ready.get(config.name, [])
        if curve and any("curve_publickey" not in k.connection_info for _, k in entries):
            return None
        while entries:
            fingerprint, kernel = entries.pop(0)
            if fingerprint != wanted:
                await self._discard(config, kernel)
                continue
            status = await backend_for(config).status(kernel.workload_id)
            if status.running:
                self._wake.set()  # refill in the background
                return kernel
            await self._discard(config, kernel)
        self._wake.set()
        return None

    def size(self, name: str) -> int:
        return len(self._ready.get(name, []))

    def failure(self, name: str) -> str | None:
        """Why the last refill of this config's pool failed (None: it did not)."""
        return self._failures.get(name)

    # ------------------------------------------------------------------ filling

    def start(self) -> None:
        """Keep the pools filled until :meth:`stop` (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop filling and remove every pooled kernel not yet handed over."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        config_file = await asyncio.to_thread(load_config, self.config_file)
        for name, entries in list(self._ready.items()):
            config = config_file.execution_configs.get(name)
            while entries:
                _, kernel = entries.pop()
                if config is not None:
                    await self._discard(config, kernel)

    async def _run(self) -> None:
        while True:
            try:
                await self.fill_once()
            except Exception as exc:  # a broken file or dead daemon must not end the loop
                self.log.warning("dss-containers warm pool: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.refill_interval)

    async def fill_once(self) -> None:
        """Bring every pool to its configured size (and drain stale or removed ones)."""
        config_file = await asyncio.to_thread(load_config, self.config_file)
        await self._drain_removed(config_file)
        jobs = []
        for config in config_file.execution_configs.values():
            if config.warm_pool_size > 0 and config.name not in self._filling:
                jobs.append(self._fill(config_file, config))
        await asyncio.gather(*jobs)

    async def _fill(self, config_file: ConfigFile, config: ExecutionConfig) -> None:
        self._filling.add(config.name)
        try:
            image = await asyncio.to_thread(images.resolve_image, config_file, config)
            fingerprint = config_fingerprint(config, image)
            entries = self._ready.setdefault(config.name, [])
            for stale in [e for e in entries if e[0] != fingerprint]:
                entries.remove(stale)
                await self._discard(config, stale[1])
            while len(entries) > config.warm_pool_size:
                await self._discard(config, entries.pop()[1])
            while len(entries) < config.warm_pool_size:
                kernel = await self._start_one(config_file, config, image)
                entries.append((fingerprint, kernel))
            self._failures.pop(config.name, None)
        except Exception as exc:
            self._failures[config.name] = str(exc)
            raise
        finally:
            self._filling.discard(config.name)

    async def _start_one(
        self, config_file: ConfigFile, config: ExecutionConfig, image: str
    ) -> LaunchedKernel:
        ownership.this_process().register()
        curve = {}
        if transport.resolve(config) == "tcp" and config_file.base_image_of(config) is not None:
            import zmq  # our base images take CurveZMQ keys: every TCP kernel uses them

            if zmq.has("curve"):
                public, secret = zmq.curve_keypair()
                curve = {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}
        launch = KernelLaunch(
            config=config,
            image=image,
            command=list(PYTHON_ARGV),
            name=f"dss-pool-{config.name}-{secrets.token_hex(4)}",
            labels=ownership.workload_labels("pool", config.name, owner="-"),
            key=secrets.token_hex(32).encode(),
            env=dict(config.env),
            curve=curve,
        )
        backend = backend_for(config)
        kernel = await launch_kernel_workload(backend, launch)
        try:  # hand out only kernels that answered: taking one costs no boot time
            await until_ready(
                kernel.connection_info,
                self.ready_timeout,
                lambda: backend.status(kernel.workload_id),
                f"{self.ready_timeout:g} s (WarmPool.ready_timeout)",
            )
        except KernelNotReady as exc:
            await remove_kernel_workload(backend, kernel.workload_id, kernel.folder)
            raise BackendError(
                f"execution config {config.name!r}: pooled kernel {kernel.name} removed: {exc}"
            ) from None
        except BaseException:
            await remove_kernel_workload(backend, kernel.workload_id, kernel.folder)
            raise
        self.log.info("dss-containers warm pool: %s ready for %r", kernel.name, config.name)
        return kernel

    async def _drain_removed(self, config_file: ConfigFile) -> None:
        for name in [n for n in self._ready if n not in config_file.execution_configs]:
            entries = self._ready.pop(name)
            self.log.info("dss-containers warm pool: config %r is gone; draining", name)
            for _, kernel in entries:
                await self._discard_unknown(kernel)

    async def _discard(self, config: ExecutionConfig, kernel: LaunchedKernel) -> None:
        try:
            await remove_kernel_workload(backend_for(config), kernel.workload_id, kernel.folder)
        except BackendError as exc:
            self.log.warning("dss-containers warm pool: cannot remove %s: %s", kernel.name, exc)

    async def _discard_unknown(self, kernel: LaunchedKernel) -> None:
        """A kernel whose config left the file: the start-up reaper removes it later (and
        its folder with it)."""
        self.log.info("dss-containers warm pool: %s left for the reaper", kernel.name)


def pool_of(configurable: Any) -> WarmPool | None:
    """The warm pool a kernel started under ``configurable`` takes from: the nearest one up
    its parent chain (a kernel's provisioner -> its manager -> the server's kernel manager
    -> the server, whose extension built the pool with ``parent=self``), or an object there
    that holds one as ``warm_pool``. None outside a server: nothing fills a pool there."""
    seen = configurable
    while seen is not None:
        held = getattr(seen, "warm_pool", None)
        if isinstance(held, WarmPool):
            return held
        settings = getattr(getattr(seen, "web_app", None), "settings", None)
        extension = settings.get("dss_containers") if isinstance(settings, dict) else None
        held = getattr(extension, "warm_pool", None)
        if isinstance(held, WarmPool):
            return held
        seen = getattr(seen, "parent", None)
    return None
