"""The Test button / ``doctor`` for a cluster: reachable, namespace there (or creatable),
and this server allowed every verb the backend calls (:mod:`.rbac`'s rules, one
SelfSubjectAccessReview each); the missing ones are named, with how to grant them."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from ...config import KubernetesSettings
from ..base import BackendError
from . import rbac
from .client import call, where

#: what ``prepull`` does in the namespace, as (verb, group, resource): its DaemonSet's life,
#: and reading its pods (asked before the set is made: one it may not delete would stay)
PREPULL_RIGHTS = (
    ("create", "apps", "daemonsets"),
    ("get", "apps", "daemonsets"),
    ("delete", "apps", "daemonsets"),
    ("list", "", "pods"),
)


def access_review(verb: str, resource: str, namespace: str, group: str = "") -> dict[str, Any]:
    """A SelfSubjectAccessReview asking whether we may ``verb`` ``resource`` (``pods/log``:
    a subresource) there; ``namespaces`` are asked about by name (a Role in the namespace
    may grant reading the namespace itself)."""
    resource, _, subresource = resource.partition("/")
    attributes: dict[str, Any] = {"verb": verb, "resource": resource, "namespace": namespace}
    if subresource:
        attributes["subresource"] = subresource
    if resource == "networkpolicies" and not group:
        group = "networking.k8s.io"
    if group:
        attributes["group"] = group
    if resource == "namespaces":
        if verb == "create":
            del attributes["namespace"]
        else:
            attributes["name"] = namespace
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
    needed: list[tuple[str, str, str]] | tuple[tuple[str, str, str], ...],
) -> None:
    """A BackendError naming every (verb, group, resource) this account may not use in
    ``namespace``, with how to grant them."""
    place = where(settings)
    auth = kubernetes.client.AuthorizationV1Api(client)
    answers = await asyncio.gather(
        *(
            call(place, auth.create_self_subject_access_review, access_review(v, r, namespace, g))
            for v, g, r in needed
        )
    )
    denied = [
        f"{v} {r}" for (v, _, r), a in zip(needed, answers, strict=True) if not a.status.allowed
    ]
    if denied:
        raise BackendError(
            f"{place}, namespace {namespace}: not allowed to {', '.join(denied)}; "
            + rbac.denied_hint(namespace)
        )


async def _needed(
    client: kubernetes.client.ApiClient, settings: KubernetesSettings, namespace: str
) -> list[tuple[str, str, str]]:
    """(verb, group, resource) the backend calls here: every rule of the Role, and what
    making the namespace takes when it is not there yet (and may be made)."""
    place = where(settings)
    try:
        await call(place, kubernetes.client.CoreV1Api(client).read_namespace, namespace)
        needed = []
    except ApiException as exc:
        if exc.status != 404 or not settings.create_namespace:
            raise BackendError(
                f"{place}: namespace {namespace} does not exist"
                + ("" if exc.status == 404 else f" or cannot be read ({exc.reason})")
            ) from None
        needed = [("create", "", "namespaces")]
        if settings.namespace_quota:
            needed.append(("create", "", "resourcequotas"))
        if settings.namespace_limits:
            needed.append(("create", "", "limitranges"))
    return needed + rbac.checks(settings.network_policy)
