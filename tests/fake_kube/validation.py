"""What the API server refuses in an update (a patch) or a delete, in its words: changed
names or uids, a stale resourceVersion (409), pod spec fields that cannot change, an
immutable Secret's data, invalid labels; and failed delete preconditions. Pure functions;
fields an update cannot touch (timestamps, a pod's status) are put back."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from .admission import secret_refusal
from .podoutput import status
from .selectors import labels_problem
from .store import KINDS, RESOURCE_NAMES

_POD_SPEC_MUTABLE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def invalid(kind: str, name: str, problem: str) -> web.Response:
    return status(422, "Invalid", f'{KINDS.get(kind, "Namespace")} "{name}" is invalid: {problem}')


def precondition_conflict(
    kind: str, name: str, obj: dict[str, Any], preconditions: dict[str, Any]
) -> str | None:
    meta = obj["metadata"]
    for field, key in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
        wanted = preconditions.get(field)
        if wanted is not None and wanted != meta.get(field):
            return (
                f'Operation cannot be fulfilled on {RESOURCE_NAMES[kind]} "{name}": '
                f"Precondition failed: {key} in precondition: {wanted}, {key} in object meta: "
                f"{meta.get(field)}"
            )
    return None


def update_refusal(kind: str, old: dict[str, Any], new: dict[str, Any]) -> web.Response | None:
    """Why the API server refuses ``new`` as an update of ``old`` (None: it takes it; the
    fields an update cannot touch are put back into ``new``)."""
    name = old["metadata"]["name"]
    meta = new.setdefault("metadata", {})
    version = old["metadata"].get("resourceVersion")
    if meta.get("resourceVersion", version) != version:
        return status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {RESOURCE_NAMES.get(kind, kind)} "{name}": the '
            "object has been modified; please apply your changes to the latest version and "
            "try again",
        )
    for field in ("name", "namespace", "uid"):
        if field in old["metadata"] and meta.get(field) != old["metadata"][field]:
            problem = f'metadata.{field}: Invalid value: "{meta.get(field)}": field is immutable'
            return invalid(kind, name, problem)
    for field in ("creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if field in old["metadata"]:
            meta[field] = old["metadata"][field]
    if problem := labels_problem(meta.get("labels") or {}):
        return invalid(kind, name, problem)
    if kind in ("pods", "namespaces", "daemonsets"):  # status: a subresource, the old kept
        new["status"] = copy.deepcopy(old.get("status"))
    if kind == "pods" and _pod_spec_changed(old["spec"], new.get("spec") or {}):
        return invalid(kind, name, f"spec: Forbidden: {_POD_SPEC_MUTABLE}")
    if kind == "secrets":
        if old.get("immutable") and any(
            new.get(f) != old.get(f) for f in ("data", "stringData", "immutable")
        ):
            problem = "data: Forbidden: field is immutable when `immutable` is set"
            return invalid(kind, name, problem)
        if refused := secret_refusal(name, new):
            return status(422, "Invalid", refused)
    return None


def _pod_spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``new`` changes a pod spec field an update may not change (all but images,
    activeDeadlineSeconds, terminationGracePeriodSeconds and added tolerations)."""
    kept = new.get("tolerations") or []
    if any(t not in kept for t in old.get("tolerations") or []):
        return True
    return _fixed_part(old) != _fixed_part(new)


def _fixed_part(spec: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            c.pop("image", None)
    for field in ("activeDeadlineSeconds", "terminationGracePeriodSeconds", "tolerations"):
        spec.pop(field, None)
    return spec
