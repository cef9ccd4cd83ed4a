"""The base of errors a user must read as they are, wherever they surface.

They are tornado ``HTTPError`` s too, so when one escapes through jupyter_server's own
``POST /api/kernels`` the answer carries our status and message instead of "500 Unhandled
error". Where jupyter_server wraps them in ``HTTPError(500, str(e))`` (``POST
/api/sessions``, kernel restarts), ``server.kernels.CORE_ROUTE_FIXES`` restores the status.
"""

from __future__ import annotations

from tornado.web import HTTPError


class ReportedError(HTTPError):
    """An error with an HTTP status whose message is meant for the user."""

    status = 500

    def __init__(self, message: str):
        super().__init__(self.status, message)  # tornado escapes "%" itself
        self.message = message

    def __str__(self) -> str:
        return self.message
