"""What a pod's status says: running, still coming, or never going to run, and why.

Pure functions of the pod object the client returns (and of the metrics API's answer), so
that the watch loop, ``status`` and ``list`` judge a pod the same way.
"""

from __future__ import annotations

from typing import Any

from kubernetes.utils.quantity import parse_quantity

from ...config import format_size
from ..base import BackendError, ImageMissing, WorkloadStatus
from .manifests import CONTAINER

IMAGE_FAILURES = ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
START_FAILURES = (
    *IMAGE_FAILURES,
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


def pod_state(pod: Any) -> tuple[str, str | None]:
    """("pending" | "running" | "exited", the cluster's reason when it will not run)."""
    status = pod.status
    if (reason := _unschedulable(pod)) is not None:
        return "pending", reason
    for cs in status.container_statuses or ():
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in START_FAILURES:
            return "exited", f"{waiting.reason}: {waiting.message or cs.image}"
    ended = terminated(pod)
    if ended is not None or status.phase in ("Succeeded", "Failed"):
        return "exited", _exit_reason(pod, ended)
    if pod.metadata.deletion_timestamp is not None:
        return "exited", "the pod is being deleted"
    if status.phase == "Running":
        return "running", None
    return "pending", None


def _unschedulable(pod: Any) -> str | None:
    for condition in pod.status.conditions or ():
        if (condition.type, condition.status, condition.reason) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return f"Unschedulable: {condition.message}"
    return None


def _exit_reason(pod: Any, ended: Any) -> str:
    if ended is not None and ended.reason == "OOMKilled":
        limit = memory_limit(pod)
        text = f"memory limit {format_size(limit)}" if limit else "no memory limit set"
        return f"OOM-killed ({text})"
    why = getattr(pod.status, "reason", None)  # the pod's own: Evicted, NodeLost, Shutdown
    if why:
        message = (getattr(pod.status, "message", None) or "").strip()
        return f"{why}: {message}" if message else why
    code = ended.exit_code if ended is not None else -1
    reason = f"exited with code {code}"
    if ended is not None and ended.message:
        reason += f": {ended.message}"
    elif code == 137:
        reason += " (killed by SIGKILL)"
    return reason


def started(pod: Any, namespace: str, name: str) -> bool:
    """True once the pod runs; raises with the cluster's reason when it will not."""
    state, reason = pod_state(pod)
    if state == "running":
        return True
    if state == "exited" or reason:
        cls = ImageMissing if reason and is_image_failure(pod) else BackendError
        raise cls(f"pod {namespace}/{name}: {reason}")
    return False


def workload_status(pod: Any) -> WorkloadStatus:
    """The backend-neutral status of a pod that exists."""
    state, reason = pod_state(pod)
    if state == "running" or (state == "pending" and not reason):
        return WorkloadStatus(state)
    ended = terminated(pod)
    return WorkloadStatus(
        "exited",
        ended.exit_code if ended is not None else -1,
        reason,
        oom_killed=ended is not None and ended.reason == "OOMKilled",
    )


def terminated(pod: Any) -> Any:
    """The first container's ``state.terminated``, or None while none has ended."""
    for cs in pod.status.container_statuses or ():
        if cs.state and cs.state.terminated is not None:
            return cs.state.terminated
    return None


def is_image_failure(pod: Any) -> bool:
    return any(
        cs.state and cs.state.waiting and cs.state.waiting.reason in IMAGE_FAILURES
        for cs in pod.status.container_statuses or ()
    )


def memory_limit(pod: Any) -> int | None:
    """The kernel container's memory limit in bytes, from the pod spec."""
    limits = (pod.spec.containers[0].resources.limits or {}) if pod.spec.containers else {}
    return int(parse_quantity(limits["memory"])) if "memory" in limits else None


def container_usage(metrics: dict[str, Any]) -> tuple[float | None, int | None]:
    """(CPU percent of one core, memory bytes) of the kernel container in a PodMetrics."""
    for container in metrics.get("containers") or []:
        if container.get("name") == CONTAINER:
            usage = container.get("usage") or {}
            cpu = round(float(parse_quantity(usage.get("cpu", "0"))) * 100, 1)
            return cpu, int(parse_quantity(usage.get("memory", "0")))
    return None, None
