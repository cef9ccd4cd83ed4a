"""The Test button / ``doctor`` for a cluster: reachable, namespace there (or creatable),
and this server allowed what starting a workload takes (SelfSubjectAccessReviews)."""

from __future__ import annotations

from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from ...config import KubernetesSettings
from ..base import BackendError
from .client import call, where

#: resource -> its API group, for those outside the core group
GROUPS = {"networkpolicies": "networking.k8s.io", "daemonsets": "apps"}
#: what ``prepull`` does in the namespace: its DaemonSet's life, and reading its pods
PREPULL_RIGHTS = (
    ("create", "daemonsets"),
    ("get", "daemonsets"),
    ("delete", "daemonsets"),
    ("list", "pods"),
)


def access_review(verb: str, resource: str, namespace: str) -> dict[str, Any]:
    """A SelfSubjectAccessReview asking whether we may ``verb`` ``resource`` there."""
    attributes: dict[str, Any] = {"verb": verb, "resource": resource}
    if resource in GROUPS:
        attributes["group"] = GROUPS[resource]
    if resource != "namespaces":
        attributes["namespace"] = namespace
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }


async def check_cluster(
    client: kubernetes.client.ApiClient, settings: KubernetesSettings, namespace: str
) -> dict[str, str]:
    """What answered, or a BackendError saying what is missing or not allowed."""
    place = where(settings)
    version = await call(place, kubernetes.client.VersionApi(client).get_code)
    needed = await _needed(client, settings, namespace)
    await check_rights(client, settings, namespace, needed)
    return {
        "daemon": f"{client.configuration.host} (namespace {namespace})",
        "engine": "kubernetes",
        "version": version.git_version,
        "api_version": f"{version.major}.{version.minor}",
    }


async def check_rights(
    client: kubernetes.client.ApiClient,
    settings: KubernetesSettings,
    namespace: str,
    needed: list[tuple[str, str]] | tuple[tuple[str, str], ...],
) -> None:
    """A BackendError naming every (verb, resource) this account may not use there."""
    place = where(settings)
    auth = kubernetes.client.AuthorizationV1Api(client)
    denied = []
    for verb, resource in needed:
        review = access_review(verb, resource, namespace)
        answer = await call(place, auth.create_self_subject_access_review, review)
        if not answer.status.allowed:
            denied.append(f"{verb} {resource}")
    if denied:
        raise BackendError(f"{place}, namespace {namespace}: not allowed to {', '.join(denied)}")


async def _needed(
    client: kubernetes.client.ApiClient, settings: KubernetesSettings, namespace: str
) -> list[tuple[str, str]]:
    """(verb, resource) pairs a start takes here: it depends on whether the namespace is."""
    place = where(settings)
    try:
        await call(place, kubernetes.client.CoreV1Api(client).read_namespace, namespace)
        needed = [("create", "pods"), ("create", "secrets"), ("delete", "pods")]
    except ApiException as exc:
        if exc.status != 404 or not settings.create_namespace:
            raise BackendError(
                f"{place}: namespace {namespace} does not exist"
                + ("" if exc.status == 404 else f" or cannot be read ({exc.reason})")
            ) from None
        needed = [("create", "namespaces"), ("create", "pods"), ("create", "secrets")]
    if settings.network_policy:
        needed.append(("create", "networkpolicies"))
    return needed
