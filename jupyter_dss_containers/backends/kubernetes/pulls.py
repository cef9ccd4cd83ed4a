"""A pod's image pull, as the kubelet's Events tell it: ``Pulling`` (``Pulling image
"x"``) while it pulls, ``Pulled`` (``Successfully pulled image "x" in 3.2s (3.2s including
waiting). Image size: 70984068 bytes.``, or ``Container image "x" already present on
machine``) once done. A pull changes nothing in the pod itself, so the watch reads these.

Pure: functions of the Event objects the client returns.
"""

from __future__ import annotations

from typing import Any

from ...phases import pulled_message
from .scheduling import event_fields

PULL_REASONS = ("Pulling", "Pulled")


def _order(event: Any) -> int:
    return int(event.metadata.resource_version or 0)


def pull_progress(events: list[Any], pod_uid: str | None = None) -> tuple[str, str] | None:
    """``("pulling", 'Pulling image "x"')`` or ``("pulled", 'pulled image "x" (67.7 MiB)
    in 3.2s')`` from the latest pull event about the pod; None before any."""
    latest = None
    for event in sorted(events, key=_order):
        reason, message, _source, uid = event_fields(event)
        if pod_uid and uid and uid != pod_uid:
            continue  # an earlier pod of the same name
        if reason in PULL_REASONS:
            latest = (reason, message)
    if latest is None:
        return None
    reason, message = latest
    if reason == "Pulling":
        return "pulling", message
    return "pulled", pulled_message(message)
