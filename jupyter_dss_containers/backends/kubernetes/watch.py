"""Waiting for a pod to run: a watch that reports what the cluster knows as soon as it
knows it (quota, Unschedulable, image pull errors, OOM-kill), and survives the API server.

An Unschedulable pod is judged by its Events (:mod:`.scheduling`): when an autoscaler says a
node is coming, the wait goes on (up to ``node_wait`` from the start), re-reading them every
:data:`REJUDGE` seconds (a scale-up that fails turns into ``NotTriggerScaleUp``), and
``progress`` hears ``("waiting-for-node", "waiting for a new node (TriggeredScaleUp: ...)")``.
Once the pod is on a node, the kubelet's ``Pulling`` / ``Pulled`` Events (re-read every
:data:`PULL_POLL` seconds: a pull changes nothing in the pod) say ``("pulling", ...)``, then
``("pulled", 'pulled image "x" (67.7 MiB) in 3.2s')`` and ``("starting", ...)``.

Blocking: it runs in a thread of :data:`.client.WATCH_POOL`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import kubernetes.client
import kubernetes.watch
from kubernetes.client.rest import ApiException

from ..base import BackendError
from .client import REQUEST_TIMEOUT, TRANSIENT_STATUSES, Backoff, api_message, is_dropped_connection
from .podstate import pod_state, started
from .pulls import pull_progress
from .scheduling import NODE_WAIT, judge

START_TIMEOUT = 120
REJUDGE = 15  # seconds between re-reads of the Events while a node is coming
PULL_POLL = 1  # seconds between re-reads of the Events while the pod is on its node
#: (phase, message) -> None; called from the watch thread
Progress = Callable[[str, str], None]


def wait_running(
    core: kubernetes.client.CoreV1Api,
    namespace: str,
    name: str,
    resource_version: str,
    place: str,
    timeout: float = START_TIMEOUT,
    node_wait: float = NODE_WAIT,
    progress: Progress | None = None,
) -> float:
    """Watch the pod until it runs; raise with the cluster's reason when it cannot.
    Returns the seconds it waited for a new node (0 when it was placed at once).

    A dropped connection or a 5xx is retried with backoff from the last resourceVersion
    seen (events in between are replayed); 410 Gone re-lists the pod, judges it as it is
    now, and watches on from the list's resourceVersion. Only an outage longer than
    OUTAGE_LIMIT fails the start. ``place`` starts the messages (the cluster, in words).
    """
    pod = _PodWatch(core, namespace, name, resource_version, time.monotonic() + timeout)
    pod.began, pod.limit = pod.deadline - timeout, timeout
    pod.node_wait, pod.progress = node_wait, progress or (lambda _phase, _message: None)
    while time.monotonic() < pod.deadline:
        try:
            if pod.runs():
                return pod.node_waited()
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
    why = f" ({pod.waiting})" if pod.waiting else ""
    raise BackendError(f"pod {namespace}/{name} was not running after {pod.limit:g} s{why}")


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
        self.began = time.monotonic()
        self.limit = deadline - self.began  # seconds the start may take, as said on failure
        self.retry = Backoff()
        self.node_wait = NODE_WAIT
        self.progress: Progress = lambda _phase, _message: None
        self.waiting: str | None = None  # the message while a node is coming
        self.node_since: float | None = None  # when the autoscaler first said so
        self.node_until: float | None = None  # when the pod was then placed
        self.uid: str | None = None
        self.on_node = False  # scheduled, not running yet: its image may be pulling
        self.pull_seen: tuple[str, str] | None = None  # the last pull event reported

    def node_waited(self) -> float:
        if self.node_since is None:
            return 0.0
        return (self.node_until or time.monotonic()) - self.node_since

    def runs(self) -> bool:
        """Re-list if needed, then follow the events until the pod runs (True), fails
        (raises) or the watch times out (False: the caller watches on)."""
        if self.version is None and self._relist():
            return True
        watch = kubernetes.watch.Watch()
        left = max(1, int(self.deadline - time.monotonic()))
        try:
            for event in watch.stream(
                self.core.list_namespaced_pod,
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                resource_version=self.version,
                timeout_seconds=self._watch_seconds(left),
            ):
                self.retry.reset()
                pod = event["object"]
                self.version = pod.metadata.resource_version
                if event["type"] == "DELETED":
                    raise self._deleted()
                if self._judge(pod):
                    return True
        finally:
            watch.stop()
        if self.waiting:
            self.version = None  # re-list: the pod judged again with its latest Events
        elif self.on_node:
            self._pulls()
        return False

    def _watch_seconds(self, left: int) -> int:
        if self.waiting:
            return min(left, REJUDGE)
        return min(left, PULL_POLL) if self.on_node else left

    def _pulls(self) -> None:
        """Report the kubelet's pull of the pod's image, as its Events say."""
        found = pull_progress(self._events(), self.uid)
        if found is None or found == self.pull_seen:
            return
        before, self.pull_seen = self.pull_seen, found
        if found[0] == "pulling":
            self.progress(*found)
        elif before is not None and before[0] == "pulling":  # the pull's size and time
            self.progress(*found)
            self.progress("starting", "image pulled; starting the container")
        else:  # already on the node: no pull to time
            self.progress("starting", found[1])

    def _judge(self, pod: kubernetes.client.V1Pod) -> bool:
        """True once the pod runs, False while it may still; raises when it never will."""
        state, reason = pod_state(pod)
        if state == "pending" and reason and reason.startswith("Unschedulable"):
            verdict = judge(reason, self._events(), pod.metadata.uid)
            if verdict.action == "fail":
                raise BackendError(f"pod {self.namespace}/{self.name}: {verdict.message}")
            if verdict.message != self.waiting:
                self.waiting = verdict.message
                self.node_since = self.node_since or time.monotonic()
                if self.node_wait > self.limit:  # a node is coming: its wait, from the start
                    self.limit = self.node_wait
                    self.deadline = self.began + self.limit
                self.progress("waiting-for-node", verdict.message)
            return False
        if started(pod, self.namespace, self.name):
            if self.pull_seen is not None and self.pull_seen[0] == "pulling":
                self._pulls()  # its Pulled event, written before the container ran
            self.progress("running", "the pod runs")
            return True
        if pod.spec.node_name:
            if self.waiting is not None:
                self.node_until = time.monotonic()
            self.waiting, self.uid = None, pod.metadata.uid
            if not self.on_node:
                self.on_node = True
                where = f"scheduled on {pod.spec.node_name}; starting the container"
                self.progress("starting", where)
            self._pulls()
        else:
            self.progress("scheduling", "waiting for the scheduler")
        return False

    def _events(self) -> list:
        """The Events about the pod (none where RBAC does not let the server list them:
        the start then fails fast, as on a fixed cluster)."""
        try:
            return self.core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.name={self.name}",
                _request_timeout=REQUEST_TIMEOUT,
            ).items
        except ApiException as exc:
            if exc.status in (401, 403):
                return []
            raise

    def _relist(self) -> bool:
        """The pod as it is now (True if it runs), and the version to go on from."""
        pods = self.core.list_namespaced_pod(
            self.namespace,
            field_selector=f"metadata.name={self.name}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        if not pods.items:
            raise self._deleted()
        if self._judge(pods.items[0]):
            return True
        self.version = pods.metadata.resource_version
        return False

    def _deleted(self) -> BackendError:
        return BackendError(f"pod {self.namespace}/{self.name} was deleted while starting")
