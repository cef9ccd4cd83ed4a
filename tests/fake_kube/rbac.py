"""RBAC for service-account tokens, as the API server's RBAC authorizer decides it.

The kubelet (:mod:`.kubelet`) mounts a token for a pod's service account; a request with
such a token is allowed only what a Role bound to that account by a RoleBinding in the
request's namespace grants (``rbac.authorization.k8s.io/v1`` objects in the store, created
through the API like any other). Anything else gets the real apiserver's 403 Status,
worded as it words it. Not decided here, as in a real cluster: ``/version``
(``system:public-info-viewer``) and SelfSubjectAccessReviews (``system:basic-user``), which
are answered from the same rules. The tests' own token (``authn.DEFAULT_TOKEN``) is the
cluster admin's. ClusterRoles and ClusterRoleBindings are not implemented.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .authn import bearer_of
from .podoutput import status
from .store import API_VERSIONS, Store

#: route resource -> (API group, resource, subresource) as RBAC names them
_SPECIAL = {
    "pods/log": ("", "pods", "log"),
    "podmetrics": ("metrics.k8s.io", "pods", ""),
    "selfsubjectaccessreviews": ("authorization.k8s.io", "selfsubjectaccessreviews", ""),
}
#: route resources every authenticated user may call
_PUBLIC = ("version", "selfsubjectaccessreviews")


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def _matches(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None):
    if not ({"*", group} & set(rule.get("apiGroups") or [])):
        return False
    if not ({"*", resource} & set(rule.get("resources") or [])):
        return False
    if not ({"*", verb} & set(rule.get("verbs") or [])):
        return False
    names = rule.get("resourceNames") or []
    return not names or name in names


class Rbac:
    """Service-account tokens, and what the Roles bound to their accounts allow."""

    def __init__(self, store: Store, tokens: set[str]):
        self.store, self.tokens = store, tokens
        self.accounts: dict[str, tuple[str, str]] = {}  # token -> (namespace, account)
        #: (user, verb, resource, namespace) of every request refused, for tests to read
        self.refused: list[tuple[str, str, str, str | None]] = []

    def issue(self, namespace: str, account: str) -> str:
        """A new token for the account (what the kubelet mounts), accepted from now on."""
        token = secrets.token_urlsafe(32)
        self.accounts[token] = (namespace, account)
        self.tokens.add(token)
        return token

    def allows(
        self,
        account: tuple[str, str],
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
        name: str | None = None,
    ) -> bool:
        """Whether a RoleBinding in ``namespace`` binds ``account`` to a Role whose rules
        grant ``verb`` on ``resource`` (``pods/log`` for a subresource) in ``group``."""
        if namespace is None:
            return False  # cluster scope: only ClusterRoles grant it (not implemented)
        sa_ns, sa = account
        for _, binding in self.store.in_namespace("rolebindings", namespace):
            ref = binding.get("roleRef") or {}
            if ref.get("kind") != "Role":
                continue
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == sa
                and s.get("namespace", namespace) == sa_ns
                for s in binding.get("subjects") or []
            ):
                continue
            role = self.store.objects["roles"].get((namespace, ref.get("name", "")))
            if role and any(
                _matches(r, verb, group, resource, name) for r in role.get("rules") or []
            ):
                return True
        return False

    def middleware(
        self, route_of: Callable[[web.Request], tuple[str, str, str | None, str | None]]
    ) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Refuse a service account's request its Roles do not allow; answer its
        SelfSubjectAccessReviews from them."""

        @web.middleware
        async def authorize(request: web.Request, handler: Any) -> web.StreamResponse:
            account = self.accounts.get(bearer_of(request) or "")
            if account is None:  # the admin's token
                return await handler(request)
            route, verb, ns, name = route_of(request)
            if route == "selfsubjectaccessreviews":
                return await self._review(request, account)
            if route in _PUBLIC:
                return await handler(request)
            group, resource, sub = _SPECIAL.get(route, (None, route, ""))
            if group is None:
                group = API_VERSIONS.get(route, "v1").rpartition("/")[0]
            if resource == "namespaces" and request.match_info.get("ns"):
                ns = name = request.match_info["ns"]  # its own name is its namespace
            full = f"{resource}/{sub}" if sub else resource
            if self.allows(account, verb, group, full, ns, name):
                return await handler(request)
            user = service_account_user(*account)
            self.refused.append((user, verb, full, ns))
            return forbidden(user, verb, group, resource, sub, ns, name)

        return authorize

    async def _review(self, request: web.Request, account: tuple[str, str]) -> web.Response:
        try:
            body = json.loads(await request.read())
            attrs = body["spec"]["resourceAttributes"]
        except (ValueError, KeyError, TypeError):
            return status(400, "BadRequest", "spec.resourceAttributes: Required value")
        resource = attrs.get("resource", "")
        if attrs.get("subresource"):
            resource += "/" + attrs["subresource"]
        allowed = self.allows(
            account,
            attrs.get("verb", ""),
            attrs.get("group", ""),
            resource,
            attrs.get("namespace") or None,
            attrs.get("name") or None,
        )
        body["status"] = {"allowed": allowed}
        if not allowed:
            body["status"]["reason"] = ""  # what the RBAC authorizer says: no reason
        body["metadata"] = {"creationTimestamp": None}
        return web.json_response(body, status=201)


def forbidden(
    user: str,
    verb: str,
    group: str,
    resource: str,
    subresource: str,
    namespace: str | None,
    name: str | None,
) -> web.Response:
    """The apiserver's refusal, word for word: ``pods "x" is forbidden: User
    "system:serviceaccount:ns:sa" cannot get resource "pods/log" in API group "" in the
    namespace "ns"``."""
    who = f"{resource}.{group}" if group else resource
    if name:
        who += f' "{name}"'
    full = f"{resource}/{subresource}" if subresource else resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{who} is forbidden: User "{user}" cannot {verb} resource "{full}" '
        f'in API group "{group}" {where}'
    )
    return status(403, "Forbidden", message)
