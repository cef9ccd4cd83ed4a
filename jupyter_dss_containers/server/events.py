"""The event bus (``/api/events/subscribe``), filtered to the subscriber's own events.

jupyter_server streams every event (kernel actions with kernel ids, contents actions with
file paths, any extension's) to every subscriber. On a multi-user server a subscriber gets
only the events of their own requests, and of the server's own actions (the culler, a
restart) on their own kernels; anything else, whatever its schema, is dropped. The user an
event came from is known because jupyter_events runs each listener in a task created by
``emit()``, which copies the emitting request's context (``CallContext``).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.events.handlers import SubscribeWebsocket

from .identity import call_context_username, serves_its_owner_only

KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"


def event_owner(schema_id: str, data: dict[str, Any], kernel_manager: Any) -> str | None:
    """The user an event belongs to: the emitting request's, else a kernel's owner."""
    user = call_context_username()
    if user is not None:
        return user
    owner_of = getattr(kernel_manager, "owner_of", None)
    if schema_id == KERNEL_ACTIONS and owner_of is not None and data.get("kernel_id"):
        return owner_of(str(data["kernel_id"]))
    return None


class OwnEventsSocket(SubscribeWebsocket):
    """``/api/events/subscribe`` that sends a user of a multi-user server their own events."""

    async def event_listener(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        if not serves_its_owner_only(self):
            me = getattr(self.current_user, "username", None)
            if not me or event_owner(schema_id, data, self.kernel_manager) != me:
                return
        await super().event_listener(logger, schema_id, data)
