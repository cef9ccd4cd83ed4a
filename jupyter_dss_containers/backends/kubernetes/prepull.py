"""The pre-pull DaemonSet and what its status says, built and judged by pure functions.

``jupyter dss-containers prepull CONFIG`` makes every node that could run a config's pods
pull its image before a user waits for it: one DaemonSet of that image, placed as the
config's pods are (node selector, tolerations, affinity) with its pull secrets, whose pod
does nothing (the image's own Python waits for SIGTERM: every kernel image has Python,
and nothing else need be pulled), as locked down as a kernel pod (non-root, no
capabilities, read-only root, RuntimeDefault seccomp, no service account token) and with
tiny resources. The set carries the workload labels (so ``cleanup`` and the start-up
reaper find it; ``--keep`` adds :data:`KEEP`, which they leave alone); its pods carry
:data:`SET_LABEL` (their selector), not ``managed``: they go with the set, never alone
(a daemon pod deleted alone is replaced by the controller).

:func:`judge` reads the set's status and its pods into per-node progress: which nodes run
a ready pod (so hold the image), which still pull, which failed and why (the cluster's
words: ``ErrImagePull``, ``ImagePullBackOff``, ``Unschedulable``).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

from ... import ownership
from ...config import ExecutionConfig
from .manifests import DEFAULT_GID, DEFAULT_UID, label_value, label_values, on_registry
from .podstate import pod_state

KIND = "prepull"  # the workload kind label of a pre-pull set
SET_LABEL = ownership.PREFIX + "prepull"  # on its pods: the set's name (the set's selector)
KEEP = ownership.KEEP
CONTAINER = "prepull"
#: the daemon pod's command: the image's Python, waiting (SIGTERM ends it at once)
PAUSE = "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()"
COMMAND = ["python", "-I", "-B", "-c", PAUSE]
RESOURCES = {
    "requests": {"cpu": "1m", "memory": "16Mi"},
    "limits": {"cpu": "50m", "memory": "64Mi"},
}
GRACE_SECONDS = 2
#: a workload id names a pre-pull set as ``<namespace>/daemonsets/<name>``
SET_ID = "daemonsets/"


def daemon_set_name(config_name: str, image: str) -> str:
    """``dss-prepull-<config>-<hash of image>``: one set per (config, image), at most 52
    characters (its pods' names add 6, and the name is a label value of theirs)."""
    digest = hashlib.sha256(image.encode()).hexdigest()[:8]
    stem = label_value(config_name.lower().replace("_", "-")).replace(".", "-")[:30]
    stem = stem.strip("-") or "config"
    return f"dss-prepull-{stem}-{digest}"


def set_id(namespace: str, name: str) -> str:
    return f"{namespace}/{SET_ID}{name}"


def split_set_id(workload_id: str) -> tuple[str, str] | None:
    """(namespace, set name) of a pre-pull set's workload id; None for a pod's id."""
    namespace, _, rest = workload_id.partition("/")
    if not rest.startswith(SET_ID):
        return None
    return namespace, rest[len(SET_ID) :]


def prepull_image(config: ExecutionConfig, image: str) -> str:
    """The image reference a config's pods run (on its registry, as the pods name it)."""
    return on_registry(image, config.registry)


def daemon_set_manifest(
    config: ExecutionConfig,
    image: str,
    namespace: str,
    labels: dict[str, str],
    keep: bool = False,
) -> dict[str, Any]:
    """The DaemonSet that pulls ``image`` (as written: see :func:`prepull_image`) onto every
    node that could run ``config``'s pods; ``labels`` are its workload labels."""
    settings = config.kubernetes
    name = daemon_set_name(config.name, image)
    selector = {SET_LABEL: name}
    set_labels = {**settings.labels, **label_values(labels)}
    if keep:
        set_labels[KEEP] = "true"
    pod_labels = {
        **settings.labels,
        ownership.KIND: KIND,
        ownership.CONFIG: label_value(config.name),
        **selector,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": DEFAULT_UID,
            "runAsGroup": DEFAULT_GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": list(COMMAND),
                "resources": copy.deepcopy(RESOURCES),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
            }
        ],
    }
    placement = {
        "nodeSelector": settings.node_selector,
        "tolerations": list(settings.tolerations),
        "affinity": settings.affinity,
    }
    pod_spec.update({k: copy.deepcopy(v) for k, v in placement.items() if v})
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": set_labels,
            "annotations": dict(settings.annotations),
        },
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": dict(settings.annotations)},
                "spec": pod_spec,
            },
        },
    }


# --------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class NodeProgress:
    """One node's pre-pull: ``scheduling``, ``pulling``, ``ready`` (it holds the image) or
    ``failed``, with the cluster's words."""

    node: str
    state: str
    detail: str = ""


@dataclass
class Progress:
    """What the set says now: nodes wanted and ready, each node's state, and whether it is
    done (every wanted node ready) or cannot finish (``failure``)."""

    desired: int
    ready: int
    nodes: list[NodeProgress] = field(default_factory=list)
    observed: bool = False  # the controller has seen this generation of the set
    failure: str | None = None

    @property
    def done(self) -> bool:
        return self.observed and self.failure is None and 0 < self.desired == self.ready


def pod_node(pod: Any) -> str:
    """The node a daemon pod runs on, or is pinned to (the controller's field term)."""
    if pod.spec.node_name:
        return pod.spec.node_name
    affinity = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    for term in (required.node_selector_terms if required else None) or ():
        for match in term.match_fields or ():
            if match.key == "metadata.name" and match.values:
                return match.values[0]
    return "(no node)"


def node_progress(pod: Any) -> NodeProgress:
    """A daemon pod's node and how far it got."""
    node = pod_node(pod)
    state, reason = pod_state(pod)
    ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or ()))
    if state == "running" and ready:
        return NodeProgress(node, "ready")
    if reason:
        return NodeProgress(node, "failed", reason)
    if state == "exited":
        return NodeProgress(node, "failed", "the pod ended")
    if not pod.spec.node_name:
        return NodeProgress(node, "scheduling")
    waiting = [
        cs.state.waiting.reason
        for cs in pod.status.container_statuses or ()
        if cs.state is not None and cs.state.waiting is not None
    ]
    return NodeProgress(node, "pulling", waiting[0] if waiting else "")


def no_node_message(config: ExecutionConfig) -> str:
    """Why a set is wanted on no node: what placed it (the config's words)."""
    s = config.kubernetes
    parts = [f"node selector {s.node_selector}"] if s.node_selector else []
    if s.tolerations:
        parts.append(f"tolerations {list(s.tolerations)}")
    if s.affinity:
        parts.append("the node affinity")
    placed = ", ".join(parts) or "its placement"
    return (
        f"no node can run execution config {config.name!r} now (by {placed}, and the nodes' "
        "taints); a DaemonSet does not make an autoscaler add nodes: with --keep, nodes "
        "that join later pull the image as they come"
    )


def judge(config: ExecutionConfig, daemon_set: Any, pods: list[Any]) -> Progress:
    """The set's progress from its status (the controller's counts) and its pods."""
    status = daemon_set.status
    generation = daemon_set.metadata.generation or 0
    observed = status is not None and (status.observed_generation or 0) >= generation > 0
    desired = status.desired_number_scheduled if status else 0
    ready = status.number_ready if status else 0
    nodes = sorted(
        (node_progress(p) for p in pods if p.metadata.deletion_timestamp is None),
        key=lambda n: n.node,
    )
    progress = Progress(desired, ready, nodes, observed)
    failed = [n for n in nodes if n.state == "failed"]
    if failed:
        progress.failure = "; ".join(f"node {n.node}: {n.detail}" for n in failed)
    elif observed and desired == 0:
        progress.failure = no_node_message(config)
    return progress
