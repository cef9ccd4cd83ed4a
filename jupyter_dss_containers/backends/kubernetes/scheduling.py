"""An Unschedulable pod, judged by its Events: is a node coming, or never?

On an autoscaling cluster (GKE, EKS, AKS with the cluster-autoscaler; Karpenter) the first
pod of a node pool is always Unschedulable until the new node joins, so that alone must not
fail a start. The pod's Events say which case it is:

- ``TriggeredScaleUp`` (cluster-autoscaler: ``pod triggered scale-up: [{pool 0->1 (max:
  3)}]``) or ``Nominated`` (Karpenter: ``Pod should schedule on: nodeclaim/...``): a node is
  coming, the start waits (``kubernetes.start_timeout``, default :data:`NODE_WAIT`);
- ``NotTriggerScaleUp`` (``pod didn't trigger scale-up: ...``): no node will come; the start
  fails with the scheduler's and the autoscaler's words;
- no autoscaler event: a fixed cluster; the start fails at once, as it always did.

Pure functions of the Event objects the client returns; the watch (:mod:`.watch`) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: seconds a start waits for a node an autoscaler is adding, unless the config says
NODE_WAIT = 600.0
#: (reason, source component) of the events saying a node is coming
NODE_COMING = {"TriggeredScaleUp": "cluster-autoscaler", "Nominated": "karpenter"}
NO_NODE = "NotTriggerScaleUp"
AUTOSCALER_REASONS = (*NODE_COMING, NO_NODE)


@dataclass(frozen=True)
class Verdict:
    """What the Events say about an Unschedulable pod."""

    #: "wait" (a node is coming) or "fail"
    action: str
    #: the message: "waiting for a new node (TriggeredScaleUp: ...)" or the refusal
    message: str


def event_fields(event: Any) -> tuple[str, str, str, str]:
    """(reason, message, source component, involved uid) of a client Event object."""
    source = event.source.component if event.source is not None else ""
    reporting = getattr(event, "reporting_component", None) or ""
    uid = event.involved_object.uid if event.involved_object is not None else ""
    return event.reason or "", event.message or "", source or reporting, uid or ""


def _order(event: Any) -> tuple[str, int]:
    stamp = event.last_timestamp or event.event_time or event.first_timestamp
    return (str(stamp or ""), int(event.metadata.resource_version or 0))


def autoscaler_event(events: list[Any], pod_uid: str | None = None) -> tuple[str, str] | None:
    """(reason, message) of the latest autoscaler verdict about the pod, if any."""
    latest = None
    for event in sorted(events, key=_order):
        reason, message, _source, uid = event_fields(event)
        if pod_uid and uid and uid != pod_uid:
            continue  # an earlier pod of the same name
        if reason in AUTOSCALER_REASONS:
            latest = (reason, message)
    return latest


def judge(unschedulable: str, events: list[Any], pod_uid: str | None = None) -> Verdict:
    """Wait or fail, for a pod the scheduler said ``unschedulable`` (its condition's
    message, ``Unschedulable: 0/3 nodes are available: ...``) about."""
    found = autoscaler_event(events, pod_uid)
    if found is None:
        return Verdict("fail", unschedulable)
    reason, message = found
    if reason in NODE_COMING:
        return Verdict("wait", f"waiting for a new node ({reason}: {message})")
    return Verdict("fail", f"{unschedulable}; {reason}: {message}")
