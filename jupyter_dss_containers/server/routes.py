"""jupyter_server's own kernel, session and event routes, with true statuses and bounded input.

Registered by the extension ahead of the core routes (same patterns), each is the core
handler plus what a multi-user server needs:

- a 500 whose cause is ours answers with the cause's status (403 for a forbidden config or
  host kernel, 503 for a dead daemon, 404 for another user's kernel): jupyter_server wraps
  kernel start errors of ``POST /api/sessions`` and restart errors in ``HTTPError(500)``;
- ``PATCH /api/sessions/<id>`` answers 403 (not 501) for a kernel the caller may not
  start and 404 for a kernel that is not theirs, before anything starts;
- bodies are checked (size, depth, digits, shape) before the core handler reads them, so
  malformed input is a 400, never a 500;
- ``/api/events/subscribe`` sends each user only their own events (:mod:`.events`).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.kernels.handlers import (
    KernelActionHandler,
    MainKernelHandler,
    _kernel_action_regex,
    _kernel_id_regex,
)
from jupyter_server.services.sessions.handlers import (
    SessionHandler,
    SessionRootHandler,
    _session_id_regex,
)
from tornado.web import HTTPError

from ..errors import ReportedError
from .events import OwnEventsSocket
from .kernels import KernelNotFound, OwnedKernelManager
from .limits import BadInput, object_body

#: the fields of a kernel or session body the core handlers read, with their types
_KERNEL_FIELDS: dict[str, Any] = {"name": str, "path": str, "kernel_id": str}
_SESSION_FIELDS: dict[str, Any] = {
    "path": str,
    "name": str,
    "type": str,
    "kernel": dict,
    "notebook": dict,
}


def _check_session_body(raw: bytes) -> dict[str, Any] | None:
    body = object_body(raw, _SESSION_FIELDS)
    if body is not None:
        for key in ("kernel", "notebook"):  # the core handler reads into them if present
            if key in body and body[key] is None:
                raise BadInput(f"{key!r} must be an object, not null")
        object_body_of(body.get("kernel"), {"id": str, "name": str}, "kernel")
        object_body_of(body.get("notebook"), {"path": str, "name": str}, "notebook")
    return body


def object_body_of(value: Any, fields: dict[str, Any], where: str) -> None:
    """The same type checks for the fields of a nested object."""
    if not isinstance(value, dict):
        return
    for key, kind in fields.items():
        if value.get(key) is not None and not isinstance(value[key], kind):
            raise BadInput(f"{where}.{key} must be a string")


def _with_true_status(handler: type) -> type:
    """The core handler, but a 500 whose cause is ours answers with the cause's status."""

    class TrueStatus(handler):
        async def post(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().post(*args, **kwargs)
            except HTTPError as exc:
                cause = exc.__cause__
                if exc.status_code == 500 and (
                    isinstance(cause, ReportedError | KernelNotFound)
                    or (isinstance(cause, HTTPError) and 400 <= cause.status_code < 500)
                ):
                    raise cause from None
                raise

    TrueStatus.__name__ = TrueStatus.__qualname__ = handler.__name__
    return TrueStatus


class KernelsRoute(MainKernelHandler):
    """``POST /api/kernels`` with its body checked first."""

    async def post(self) -> None:
        object_body(self.request.body, _KERNEL_FIELDS)
        await super().post()


class SessionsRoute(_with_true_status(SessionRootHandler)):
    """``POST /api/sessions`` with its body checked first and our statuses."""

    async def post(self) -> None:
        _check_session_body(self.request.body)
        await super().post()


class SessionRoute(SessionHandler):
    """``PATCH /api/sessions/<id>``: the session and its new kernel checked before the core
    handler, whose own refusals would be 400 (missing) or 501 (forbidden)."""

    async def patch(self, session_id: str) -> None:
        body = _check_session_body(self.request.body)
        kernel = (body or {}).get("kernel")
        if isinstance(kernel, dict):
            await self.session_manager.get_session(session_id=session_id)  # 404 if not theirs
            manager = self.kernel_manager
            if kernel.get("id") is not None:
                manager._check_kernel_id(kernel["id"])  # missing or not theirs: 404 alike
            elif kernel.get("name") is not None and isinstance(manager, OwnedKernelManager):
                await manager.check_may_start(kernel["name"])  # 403 with the reason
        await super().patch(session_id)


#: (pattern, handler) pairs that take precedence over jupyter_server's own routes
CORE_ROUTE_FIXES: list[tuple[str, type]] = [
    (r"/api/kernels/?", KernelsRoute),
    (r"/api/sessions/?", SessionsRoute),
    (rf"/api/sessions/{_session_id_regex}", SessionRoute),
    (
        rf"/api/kernels/{_kernel_id_regex}/{_kernel_action_regex}",
        _with_true_status(KernelActionHandler),
    ),
    (r"/api/events/subscribe", OwnEventsSocket),
]
