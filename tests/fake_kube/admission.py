"""What the fake API server refuses at create time, in the real server's words: LimitRange
defaults and maxima, Pod Security Admission (:mod:`.podsecurity`), ResourceQuota, and
Secrets over 1 MiB. Pure functions of the store, in the real plugins' order (LimitRanger,
PodSecurity, ResourceQuota)."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from . import podsecurity
from .store import Store

MAX_SECRET_SIZE = 1024 * 1024  # the real API server's limit on a Secret's data


def secret_refusal(name: str, secret: dict[str, Any]) -> str | None:
    """The 422 message for a Secret whose data is too big, else None."""
    size = sum(len(base64.b64decode(v)) for v in (secret.get("data") or {}).values())
    if size <= MAX_SECRET_SIZE:
        return None
    return f'Secret "{name}" is invalid: data: Too long: must have at most {MAX_SECRET_SIZE} bytes'


def admit_pod(store: Store, ns: str, pod: dict[str, Any]) -> str | None:
    """Apply LimitRange defaults (to ``pod``, in place) and check maxima, then the
    namespace's Pod Security level, then quotas."""
    return (
        _limit_ranges(store, ns, pod)
        or podsecurity.refusal(store.namespaces[ns], pod)
        or _quotas(store, ns, pod)
    )


def _limit_ranges(store: Store, ns: str, pod: dict[str, Any]) -> str | None:
    containers = pod["spec"]["containers"]
    for _, lr in store.in_namespace("limitranges", ns):
        for item in lr["spec"]["limits"]:
            if item.get("type") != "Container":
                continue
            for c in containers:
                refused = _limit_container(c, item)
                if refused:
                    return refused
    return None


def _limit_container(c: dict[str, Any], item: dict[str, Any]) -> str | None:
    res = c.setdefault("resources", {})
    for src, dst in (("default", "limits"), ("defaultRequest", "requests")):
        for r, q in (item.get(src) or {}).items():
            res.setdefault(dst, {}).setdefault(r, q)
    for r, q in (item.get("max") or {}).items():
        limit = (res.get("limits") or {}).get(r)
        if limit is not None and parse_quantity(limit) > parse_quantity(q):
            return (
                f"maximum {'memory' if r == 'memory' else r} usage per "
                f"Container is {q}, but limit is {limit}"
            )
    return None


def _quotas(store: Store, ns: str, pod: dict[str, Any]) -> str | None:
    for qname, quota in store.in_namespace("resourcequotas", ns):
        hard = quota["spec"].get("hard") or {}
        for resource, limit in hard.items():
            requested = usage([pod], resource)
            if requested is None:
                return f"failed quota: {qname}: must specify {resource}"
            used = sum(
                (usage([p], resource) or Decimal(0))
                for p in store.pods(ns)
                if p["status"].get("phase") not in ("Succeeded", "Failed")
            )
            if used + requested > parse_quantity(limit):
                return (
                    f"exceeded quota: {qname}, requested: {resource}={fmt(requested)}, "
                    f"used: {resource}={fmt(used)}, limited: {resource}={limit}"
                )
    return None


def usage(pods: list[dict[str, Any]], resource: str) -> Decimal | None:
    """What ``pods`` take of a quota's resource (None: a pod does not say, which a quota on
    that resource refuses)."""
    if resource in ("pods", "count/pods"):
        return Decimal(len(pods))
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests"):
        kind, name = "requests", resource
    total = Decimal(0)
    for pod in pods:
        for c in pod["spec"]["containers"]:
            q = ((c.get("resources") or {}).get(kind) or {}).get(name)
            if q is None:
                return None
            total += parse_quantity(q)
    return total


def fmt(q: Decimal) -> str:
    """A quantity as the API server prints it in quota messages (``256Mi``, ``1``)."""
    for suffix, power in (("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if q >= 1024**power and q % 1024**power == 0:
            return f"{int(q / 1024**power)}{suffix}"
    return str(q.normalize()) if q != int(q) else str(int(q))
