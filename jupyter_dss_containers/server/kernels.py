"""Kernels and sessions that answer only to the user who started them, on every core route.

jupyter_server's own ``/api/kernels``, ``/api/kernels/<id>/channels`` and ``/api/sessions``
routes let any authenticated user of a multi-user server see, use, restart and stop any
kernel. Every one of them reaches a kernel through ``_check_kernel_id`` (directly, or via
``get_kernel`` and ``kernel_model``), so that is where the owner is checked: another
user's kernel "does not exist" for the caller (404, the same text as a missing one), and
listings skip it. A kernel spec that is not one of ours runs on the server itself (a "host
kernel") and starts only for users the config file's ``host_kernels`` permits. Under the
stock token or password identity provider every request is the server owner's, and calls
outside any request (the culler, the restarter, shutdown) are the server's own: neither is
restricted.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import uuid
from collections import OrderedDict
from typing import Any

from jupyter_client.kernelspec import NoSuchKernel
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.services.sessions.sessionmanager import SessionManager
from jupyter_server.utils import to_os_path
from tornado.web import HTTPError
from traitlets import Unicode

from ..config import load_config
from ..kernelspecs import is_container_spec
from ..permissions import check_shared_part
from ..workspace import is_inside
from .identity import call_context_identity, call_context_username

#: kernel ids a refusal may repeat (jupyter_server's own are uuids); others are not echoed
_ECHOABLE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: how many removed kernels' owners are remembered (events about them still find them)
_FORMER_OWNERS = 1000


def does_not_exist(kernel_id: Any) -> str:
    """jupyter_server's own text for a missing kernel, for missing and not-yours alike."""
    if isinstance(kernel_id, str) and _ECHOABLE_ID.match(kernel_id):
        return f"Kernel does not exist: {kernel_id}"
    return "Kernel does not exist"


class KernelNotFound(HTTPError, KeyError):
    """404 for routes; a KeyError for the session manager, which then skips the session."""

    def __init__(self, kernel_id: Any):
        super().__init__(404, does_not_exist(kernel_id))

    def __str__(self) -> str:
        return self.log_message or "Kernel does not exist"


class OwnedKernelManager(AsyncMappingKernelManager):
    """The stock kernel manager, plus: each kernel belongs to the user who started it, host
    kernels need the ``host_kernels`` permission, and the culler sees every user's kernels."""

    dss_config_file = Unicode(
        None,
        allow_none=True,
        help="The config file whose host_kernels permission decides host kernel starts "
        "(the extension sets it; default: the usual search).",
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._owners: dict[str, str] = {}
        self._former_owners: OrderedDict[str, str] = OrderedDict()

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs: Any) -> str:
        user = call_context_username()
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)  # checks owner
        if user:
            await self.check_may_start(kwargs.get("kernel_name"))
        kernel_id = kernel_id or str(uuid.uuid4())
        path = kwargs.pop("path", None)
        if path is not None:  # the stock manager looks for the folder on the event loop
            kwargs["cwd"] = await asyncio.to_thread(
                self.cwd_for_path, path, env=kwargs.get("env", {})
            )
        if user:  # owned from the first moment, before anything can look it up
            self._owners[kernel_id] = user
        try:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        except BaseException:
            self._owners.pop(kernel_id, None)
            # a failed start leaves no pending entry behind for shutdown_all to wait on
            pending = self._pending_kernels.get(kernel_id)
            if pending is not None and pending.done():
                self._pending_kernels.pop(kernel_id, None)
            raise

    async def check_may_start(self, kernel_name: str | None) -> None:
        """Refuse (403, with the reason) a kernel spec the requesting user may not start.

        Container specs are checked by the provisioner against their config; any other
        spec is a host kernel, open only to the config file's ``host_kernels``.
        """
        name = kernel_name or self.default_kernel_name
        try:
            spec = await asyncio.to_thread(self.kernel_spec_manager.get_kernel_spec, name)
        except NoSuchKernel:
            shown = name if _ECHOABLE_ID.match(name) else "with that name"
            raise HTTPError(404, f"No such kernel spec: {shown}") from None
        if is_container_spec(spec):
            return
        config_file = await asyncio.to_thread(load_config, self.dss_config_file)
        identity = call_context_identity(config_file)
        if identity is not None:
            check_shared_part(identity, config_file.host_kernels)

    def _check_kernel_id(self, kernel_id: str) -> None:
        if kernel_id not in self:
            raise KernelNotFound(kernel_id)
        owner = self._owners.get(kernel_id)
        user = call_context_username()
        if owner and user and user != owner:
            raise KernelNotFound(kernel_id)

    def is_visible(self, kernel_id: str | None) -> bool:
        """Whether the requesting user may see this kernel (always, outside requests)."""
        owner = self._owners.get(kernel_id or "")
        user = call_context_username()
        return not (owner and user and user != owner)

    def owner_of(self, kernel_id: str) -> str | None:
        """Who started a kernel, also for a while after it was removed."""
        return self._owners.get(kernel_id) or self._former_owners.get(kernel_id)

    def remove_kernel(self, kernel_id: str) -> Any:
        owner = self._owners.pop(kernel_id, None)
        if owner:
            self._former_owners[kernel_id] = owner
            while len(self._former_owners) > _FORMER_OWNERS:
                self._former_owners.popitem(last=False)
        return super().remove_kernel(kernel_id)

    async def shutdown_all(self, now: bool = False) -> None:
        """Stop every kernel, never failing on a start that failed earlier.

        jupyter_client keeps a failed start's entry among its pending kernels, and
        jupyter_server's shutdown of it raises "does not exist": the server's stop then
        fails and SIGTERM no longer ends the process.
        """
        self._forget_failed_starts()
        try:
            await super().shutdown_all(now=now)
        except Exception as exc:  # a start failed while the server stopped: stop the rest
            self.log.warning("dss-containers: %s; stopping the other kernels", exc)
            self._forget_failed_starts()
            kernel_ids = sorted(set(self.list_kernel_ids()) | set(self._pending_kernels))
            results = await asyncio.gather(
                *(self.shutdown_kernel(k, now=True) for k in kernel_ids), return_exceptions=True
            )
            for kernel_id, result in zip(kernel_ids, results, strict=True):
                if isinstance(result, Exception):
                    self.log.warning("dss-containers: kernel %s: %s", kernel_id, result)

    def _forget_failed_starts(self) -> None:
        for kernel_id, task in list(self._pending_kernels.items()):
            if task.done() and kernel_id not in self._kernels:
                self._pending_kernels.pop(kernel_id, None)

    def initialize_culler(self) -> None:
        """Start the culler outside any request's context.

        It is first started from inside the request that started the first kernel, and a
        periodic callback keeps the context it was started in: every later cull would run
        as that user and find nobody else's kernels.
        """
        contextvars.Context().run(super().initialize_culler)

    def workspace_root(self) -> str:
        """The folder a kernel of this request mounts as its workspace: the requesting
        user's own root on a multi-user server, else the server's root."""
        return _user_root_of_request(self) or self.root_dir

    def cwd_for_path(self, path: str, **kwargs: Any) -> str:
        """A kernel's folder, inside the requesting user's own root on a multi-user server."""
        root = _user_root_of_request(self)
        if root is None:
            return super().cwd_for_path(path, **kwargs)
        os_path = to_os_path(path or "", root)
        if not is_inside(os_path, root):
            return root
        while not os.path.isdir(os_path) and os_path != root:
            os_path = os.path.dirname(os_path)
        return os_path


def _user_root_of_request(kernel_manager: Any) -> str | None:
    """The requesting user's root from the server's contents manager, None when it is not
    a per-user one or no multi-user request is being served."""
    from .contents import UserContentsManager

    contents = getattr(kernel_manager.parent, "contents_manager", None)
    if isinstance(contents, UserContentsManager) and call_context_username():
        return contents.root_dir
    return None


class OwnedSessionManager(SessionManager):
    """Sessions of the caller's own kernels only, each user with their own paths.

    A session is found, listed, updated and deleted only through a kernel the caller owns,
    so two users may each have a session for their own ``a.ipynb`` (their roots differ),
    one cannot squat the other's path, and pointing a session at another user's kernel
    fails as if that kernel did not exist.
    """

    async def save_session(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
        self._check_kernel(kwargs.get("kernel_id"))
        return await super().save_session(session_id, *args, **kwargs)

    async def update_session(self, session_id: str, **kwargs: Any) -> None:
        self._check_kernel(kwargs.get("kernel_id"))
        await super().update_session(session_id, **kwargs)

    async def session_exists(self, path: str) -> bool:
        self.cursor.execute("SELECT * FROM session WHERE path=?", (path,))
        for row in self.cursor.fetchall():
            if self._mine(row) and await self.row_to_model(row, tolerate_culled=True):
                return True
        return False

    async def get_session(self, **kwargs: Any) -> Any:
        if not kwargs:
            raise TypeError("must specify a column to query")
        for column in kwargs:
            if column not in self._columns:
                raise TypeError(f"No such column: {column}")
        where = " AND ".join(f"{column}=?" for column in kwargs)
        self.cursor.execute(f"SELECT * FROM session WHERE {where}", list(kwargs.values()))
        rows = [row for row in self.cursor.fetchall() if self._mine(row)]
        if rows:
            try:
                return await self.row_to_model(rows[0])
            except KeyError:
                pass  # its kernel is gone: as missing as any other
        asked = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k == "session_id")
        raise HTTPError(404, f"Session not found: {asked}" if asked else "Session not found")

    async def list_sessions(self) -> list[Any]:
        return [s for s in await super().list_sessions() if self._visible(s["kernel"]["id"])]

    def _mine(self, row: Any) -> bool:
        return self._visible(row["kernel_id"])

    def _visible(self, kernel_id: str | None) -> bool:
        manager = self.kernel_manager
        return not isinstance(manager, OwnedKernelManager) or manager.is_visible(kernel_id)

    def _check_kernel(self, kernel_id: str | None) -> None:
        if kernel_id is not None and isinstance(self.kernel_manager, OwnedKernelManager):
            self.kernel_manager._check_kernel_id(kernel_id)
