"""Following a pod's log: a blocking producer for :func:`..pump.pumped`, which runs it in
a daemon thread (the log API streams as long as the container writes)."""

from __future__ import annotations

import codecs
from collections.abc import Callable

import kubernetes.client
from kubernetes.client.rest import ApiException

from ..base import BackendError
from . import client as kube
from .manifests import CONTAINER


def log_follower(
    core: kubernetes.client.CoreV1Api, namespace: str, name: str, place: str
) -> Callable[[Callable[[str], None]], None]:
    """A producer for :func:`..pump.pumped`: the pod's log as it comes; a deleted pod's
    output (404, a dropped connection) ends it quietly, other failures say why."""

    def follow(emit: Callable[[str], None]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            response = core.read_namespaced_pod_log(
                name,
                namespace,
                container=CONTAINER,
                follow=True,
                _preload_content=False,  # no timeout: a job may be quiet for hours
            )
            try:
                for chunk in response.stream(64 * 1024, decode_content=True):
                    if text := decoder.decode(chunk):
                        emit(text)
            finally:
                response.release_conn()
        except ApiException as exc:
            if exc.status != 404:
                raise BackendError(f"{place}: {kube.api_message(exc)}") from None
        except Exception as exc:
            if not kube.is_dropped_connection(exc):
                raise BackendError(f"{place}: following pod {namespace}/{name}: {exc!r}") from None

    return follow
