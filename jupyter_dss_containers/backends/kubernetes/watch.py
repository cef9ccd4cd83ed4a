"""Waiting for a pod to run: a watch that reports what the cluster knows as soon as it
knows it (quota, Unschedulable, image pull errors, OOM-kill), and survives the API server.

Blocking: it runs in a thread of :data:`.client.WATCH_POOL`.
"""

from __future__ import annotations

import time

import kubernetes.client
import kubernetes.watch
from kubernetes.client.rest import ApiException

from ..base import BackendError
from .client import REQUEST_TIMEOUT, TRANSIENT_STATUSES, Backoff, api_message, is_dropped_connection
from .podstate import started

START_TIMEOUT = 120


def wait_running(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    name: str,
    resource_version: str,
    place: str,
    timeout: float = START_TIMEOUT,
) -> None:
    """Watch the pod until it runs; raise with the cluster's reason when it cannot.

    A dropped connection or a 5xx is retried with backoff from the last resourceVersion
    seen (events in between are replayed); 410 Gone re-lists the pod, judges it as it is
    now, and watches on from the list's resourceVersion. Only an outage longer than
    OUTAGE_LIMIT fails the start. ``place`` starts the messages (the cluster, in words).
    """
    pod = _PodWatch(core, namespace, name, resource_version, time.monotonic() + timeout)
    while time.monotonic() < pod.deadline:
        try:
            if pod.runs():
                return
        except ApiException as exc:
            if exc.status == 410:  # resource version too old: re-list
                pod.version = None
                continue
            if exc.status not in TRANSIENT_STATUSES:
                raise BackendError(f"{place}: {api_message(exc)}") from None
            pod.retry.wait(f"{place}: {api_message(exc)}")
        except Exception as exc:
            if not is_dropped_connection(exc):
                raise
            pod.retry.wait(f"{place}: watching pod {namespace}/{name}: {exc!r}")
    raise BackendError(f"pod {namespace}/{name} was not running after {timeout:g} s")


class _PodWatch:
    """One pod being watched: where its event stream goes on from, and the retry state."""

    def __init__(
        self,
        core: kubernetes.client.CoreV1Api,
        namespace: str,
        name: str,
        version: str | None,
        deadline: float,
    ):
        self.core, self.namespace, self.name = core, namespace, name
        self.version, self.deadline = version, deadline
        self.retry = Backoff()

    def runs(self) -> bool:
        """Re-list if needed, then follow the events until the pod runs (True), fails
        (raises) or the watch times out (False: the caller watches on)."""
        if self.version is None and self._relist():
            return True
        watch = kubernetes.watch.Watch()
        try:
            for event in watch.stream(
                self.core.list_namespaced_pod,
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                resource_version=self.version,
                timeout_seconds=max(1, int(self.deadline - time.monotonic())),
            ):
                self.retry.reset()
                pod = event["object"]
                self.version = pod.metadata.resource_version
                if event["type"] == "DELETED":
                    raise self._deleted()
                if started(pod, self.namespace, self.name):
                    return True
        finally:
            watch.stop()
        return False

    def _relist(self) -> bool:
        """The pod as it is now (True if it runs), and the version to go on from."""
        pods = self.core.list_namespaced_pod(
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        if not pods.items:
            raise self._deleted()
        if started(pods.items[0], self.namespace, self.name):
            return True
        self.version = pods.metadata.resource_version
        return False

    def _deleted(self) -> BackendError:
        return BackendError(f"pod {self.namespace}/{self.name} was deleted while starting")
