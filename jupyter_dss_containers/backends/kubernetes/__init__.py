"""The Kubernetes backend: each workload is a Pod (plus a Secret with its private files and
a NetworkPolicy), through the official ``kubernetes`` client.

- :mod:`.client`: the cached API client per cluster, calls in threads, errors in words;
- :mod:`.manifests`: pure builders of the Pod, Secret, NetworkPolicy and namespace objects;
- :mod:`.podstate`: what a pod's status means (running, pending, failed and why);
- :mod:`.watch`: waiting for a pod to run through a watch that survives the API server;
- :mod:`.access`: the cluster check (``doctor``, the Test button);
- :mod:`.rbac`: the verbs the backend calls: the minimal Role and doctor's checks;
- :mod:`.backend`: :class:`KubernetesBackend`, the I/O that ties them together.
"""

from __future__ import annotations

from ...config import KubernetesSettings
from .backend import KubernetesBackend, process_identity_name
from .client import (
    OUTAGE_LIMIT,
    REQUEST_TIMEOUT,
    TRANSIENT_STATUSES,
    Backoff,
    api_message,
)
from .manifests import (
    CONTAINER,
    DEFAULT_GID,
    DEFAULT_UID,
    OWNER_LABEL,
    POD_LABEL,
    READ_ONLY_HOME,
    SECRET_LIMIT,
    TOKEN_ANNOTATION,
    check_model,
    label_value,
    merge_patch,
    on_registry,
)
from .podstate import pod_state
from .watch import START_TIMEOUT

__all__ = [
    "CONTAINER",
    "DEFAULT_GID",
    "DEFAULT_UID",
    "OUTAGE_LIMIT",
    "OWNER_LABEL",
    "POD_LABEL",
    "READ_ONLY_HOME",
    "REQUEST_TIMEOUT",
    "SECRET_LIMIT",
    "START_TIMEOUT",
    "TOKEN_ANNOTATION",
    "TRANSIENT_STATUSES",
    "Backoff",
    "KubernetesBackend",
    "KubernetesSettings",
    "api_message",
    "check_model",
    "label_value",
    "merge_patch",
    "on_registry",
    "pod_state",
    "process_identity_name",
]
