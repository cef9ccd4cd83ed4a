"""Kernels that answer only to the user who started them, on every core kernel route.

jupyter_server's own ``/api/kernels``, ``/api/kernels/<id>/channels`` and ``/api/sessions``
routes let any authenticated user of a multi-user server see, use, restart and stop any
kernel. Every one of them reaches a kernel through ``_check_kernel_id`` (directly, or via
``get_kernel`` and ``kernel_model``), so that is where the owner is checked: another
user's kernel "does not exist" for the caller (404), and listings skip it. Under the
stock token or password identity provider every request is the server owner's, and
calls outside any request (the culler, the restarter, shutdown) are the server's own:
neither is restricted.
"""

from __future__ import annotations

import uuid
from typing import Any

from jupyter_server.services.kernels.handlers import (
    KernelActionHandler,
    _kernel_action_regex,
    _kernel_id_regex,
)
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.services.sessions.handlers import SessionRootHandler
from jupyter_server.services.sessions.sessionmanager import SessionManager
from tornado.web import HTTPError

from ..errors import ReportedError
from .identity import call_context_username


class KernelNotFound(HTTPError, KeyError):
    """404 for routes; a KeyError for the session manager, which then skips the session."""

    def __init__(self, kernel_id: str):
        super().__init__(404, "Kernel does not exist: %s", kernel_id)

    def __str__(self) -> str:
        return HTTPError.__str__(self)


class OwnedKernelManager(AsyncMappingKernelManager):
    """The stock kernel manager, plus: each kernel belongs to the user who started it."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._owners: dict[str, str] = {}

    async def start_kernel(self, *, kernel_id: str | None = None, **kwargs: Any) -> str:
        user = call_context_username()
        if kernel_id is not None and kernel_id in self:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)  # checks owner
        kernel_id = kernel_id or str(uuid.uuid4())
        if user:  # owned from the first moment, before anything can look it up
            self._owners[kernel_id] = user
        try:
            return await super().start_kernel(kernel_id=kernel_id, **kwargs)
        except BaseException:
            self._owners.pop(kernel_id, None)
            raise

    def _check_kernel_id(self, kernel_id: str) -> None:
        super()._check_kernel_id(kernel_id)
        owner = self._owners.get(kernel_id)
        user = call_context_username()
        if owner and user and user != owner:
            raise KernelNotFound(kernel_id)

    def remove_kernel(self, kernel_id: str) -> Any:
        self._owners.pop(kernel_id, None)
        return super().remove_kernel(kernel_id)


class OwnedSessionManager(SessionManager):
    """Sessions that can only point at the caller's own kernels.

    Creating or re-pointing a session at another user's kernel would otherwise save a row
    the caller cannot read and the kernel's owner did not ask for.
    """

    async def save_session(self, session_id: str, *args: Any, **kwargs: Any) -> Any:
        self._check_kernel(kwargs.get("kernel_id"))
        return await super().save_session(session_id, *args, **kwargs)

    async def update_session(self, session_id: str, **kwargs: Any) -> None:
        self._check_kernel(kwargs.get("kernel_id"))
        await super().update_session(session_id, **kwargs)

    def _check_kernel(self, kernel_id: str | None) -> None:
        if kernel_id is not None and isinstance(self.kernel_manager, OwnedKernelManager):
            self.kernel_manager._check_kernel_id(kernel_id)


def _with_true_status(handler: type) -> type:
    """The core handler, but a 500 whose cause is ours answers with the cause's status.

    jupyter_server wraps every kernel start error of ``POST /api/sessions`` and every
    restart error of ``POST /api/kernels/<id>/restart`` in ``HTTPError(500, ...)``; when
    the cause is one of ours (403 for a forbidden config, 503 for a dead daemon, 404 for
    another user's kernel) that status is the true answer.
    """

    class TrueStatus(handler):
        async def post(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().post(*args, **kwargs)
            except HTTPError as exc:
                if exc.status_code == 500 and isinstance(
                    exc.__cause__, ReportedError | KernelNotFound
                ):
                    raise exc.__cause__ from None
                raise

    TrueStatus.__name__ = TrueStatus.__qualname__ = handler.__name__
    return TrueStatus


#: (pattern, handler) pairs that take precedence over jupyter_server's own routes
CORE_ROUTE_FIXES = [
    (r"/api/sessions/?", _with_true_status(SessionRootHandler)),
    (
        rf"/api/kernels/{_kernel_id_regex}/{_kernel_action_regex}",
        _with_true_status(KernelActionHandler),
    ),
]
