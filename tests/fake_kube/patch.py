"""The three patch formats of the API server, as pure functions of (object, patch):

- JSON Patch (RFC 6902, ``application/json-patch+json``): a list of operations;
- JSON Merge Patch (RFC 7386, ``application/merge-patch+json``): mappings merge, ``null``
  deletes, lists are replaced whole;
- strategic merge patch (``application/strategic-merge-patch+json``, what the official
  client sends for a dict body): like a merge patch, but the lists the API types declare
  with a merge key (containers by ``name``, ownerReferences by ``uid``, ...) merge item by
  item, and the ``$patch``, ``$retainKeys``, ``$deleteFromPrimitiveList/...`` and
  ``$setElementOrder/...`` directives are honoured.

A patch that cannot apply raises :class:`PatchError` with the status the API server gives
(400 for a malformed patch, 422 for one that does not apply).
"""

from __future__ import annotations

import copy
from typing import Any

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_CONTAINER_LISTS = {"env": "name", "ports": "containerPort", "volumeMounts": "mountPath"}
_CONTAINER_LISTS["volumeDevices"] = "devicePath"
#: path (dict keys from the object's root, list items skipped) -> the list's merge key;
#: lists not named here are replaced whole, as for types without a patch strategy
MERGE_KEYS: dict[str, str] = {
    "metadata.ownerReferences": "uid",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.hostAliases": "ip",
    "spec.topologySpreadConstraints": "topologyKey",
    "status.conditions": "type",
    "status.podIPs": "ip",
}
for _kind in ("containers", "initContainers", "ephemeralContainers"):
    MERGE_KEYS[f"spec.{_kind}"] = "name"
    for _field, _key in _CONTAINER_LISTS.items():
        MERGE_KEYS[f"spec.{_kind}.{_field}"] = _key
#: lists of scalars that merge as sets
PRIMITIVE_SETS = {"metadata.finalizers"}

_DELETE = object()  # a map or list item that a ``$patch: delete`` removed


class PatchError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def apply(content_type: str, obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    """``obj`` patched (a new object); PatchError if the patch is bad or does not apply."""
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            message = "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            raise PatchError(400, message)
        return json_patch(obj, patch)
    if not isinstance(patch, dict):
        message = "json: cannot unmarshal array into Go value of type map[string]interface {}"
        raise PatchError(400, message)
    if content_type == MERGE_PATCH:
        return merge_patch(obj, patch)
    return strategic_merge(obj, patch)


# --------------------------------------------------------------------------- RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: mappings merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# --------------------------------------------------------------------------- RFC 6902


def _missing(op: str, path: str) -> PatchError:
    return PatchError(422, f"{op} operation does not apply: doc is missing path: {path}")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(422, f'JSON pointer must be empty or start with a "/": {path}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str, path: str) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _missing(op, path) from None
    if not isinstance(node, (dict, list)):
        raise _missing(op, path)
    return node, parts[-1]


def _index(node: list, key: str, op: str, path: str, adding: bool = False) -> int:
    if adding and key == "-":
        return len(node)
    try:
        index = int(key)
    except ValueError:
        raise _missing(op, path) from None
    if index < 0 or index > len(node) - (0 if adding else 1):
        raise _missing(op, path)
    return index


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    node, key = _parent(doc, parts, op, path)
    if isinstance(node, list):
        return node[_index(node, key, op, path)]
    if key not in node:
        raise _missing(op, path)
    return node[key]


def _remove(doc: Any, path: str, op: str) -> Any:
    node, key = _parent(doc, _pointer(path), op, path)
    if isinstance(node, list):
        return node.pop(_index(node, key, op, path))
    if key not in node:
        raise _missing(op, path)
    return node.pop(key)


def _add(doc: Any, path: str, value: Any, op: str, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    node, key = _parent(doc, parts, op, path)
    if isinstance(node, list):
        index = _index(node, key, op, path, adding=not replace)
        if replace:
            node[index] = value
        else:
            node.insert(index, value)
    else:
        if replace and key not in node:
            raise PatchError(422, f"{op} operation does not apply: doc is missing key: {path}")
        node[key] = value
    return doc


def json_patch(obj: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902 operations applied in order to a copy of ``obj``."""
    doc: Any = copy.deepcopy(obj)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(400, f"invalid JSON patch operation: {operation!r}")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(422, f"{op} operation does not apply: missing value")
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            doc = _add(doc, path, value, op)
        elif op == "replace":
            doc = _add(doc, path, value, op, replace=True)
        elif op == "remove":
            _remove(doc, path, op)
        elif op in ("move", "copy"):
            if "from" not in operation:
                raise PatchError(422, f"{op} operation does not apply: missing from")
            moved = _get(doc, operation["from"], op)
            if op == "move":
                _remove(doc, operation["from"], op)
            doc = _add(doc, path, copy.deepcopy(moved), op)
        elif op == "test":
            if _get(doc, path, op) != value:
                raise PatchError(422, f"testing value {path} failed: test failed")
        else:
            raise PatchError(400, f"Unexpected kind: {op}")
    if not isinstance(doc, dict):
        raise PatchError(422, "the patch made the object something other than an object")
    return doc


# --------------------------------------------------------------------------- strategic


def strategic_merge(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch applied to a copy of ``obj``."""
    merged = _merge_map(copy.deepcopy(obj), copy.deepcopy(patch), "")
    if merged is _DELETE:
        raise PatchError(422, "a $patch: delete at the root would delete the object")
    return merged


def _merge_map(base: dict[str, Any], patch: dict[str, Any], path: str) -> Any:
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip(patch)
    if directive not in (None, "merge"):
        raise PatchError(422, f"Unknown patch type: {directive} in map: {patch}")
    retain = patch.pop("$retainKeys", None)
    for key in [k for k in patch if k.startswith("$setElementOrder/")]:
        del patch[key]  # only the order of the merged list: kept as merged
    for key in [k for k in patch if k.startswith("$deleteFromPrimitiveList/")]:
        field = key.partition("/")[2]
        doomed = patch.pop(key) or []
        if isinstance(base.get(field), list):
            base[field] = [v for v in base[field] if v not in doomed]
    for key, value in patch.items():
        where = f"{path}.{key}" if path else key
        if value is None:
            base.pop(key, None)
            continue
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged = _merge_map(current, value, where)
            if merged is _DELETE:
                base.pop(key, None)
            else:
                base[key] = merged
        elif isinstance(value, list) and isinstance(current, list):
            base[key] = _merge_list(current, value, where)
        else:
            base[key] = _strip(value)
    if retain is not None:
        base = {k: v for k, v in base.items() if k in retain}
    return base


def _merge_list(base: list[Any], patch: list[Any], path: str) -> list[Any]:
    if path in PRIMITIVE_SETS:
        return base + [v for v in patch if v not in base]
    key = MERGE_KEYS.get(path)
    if key is None:
        return _strip(patch)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [_strip(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    out = list(base)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(422, f"map: {item} does not contain declared merge key: {key}")
        index = next((n for n, b in enumerate(out) if b.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
        elif index is None:
            out.append(_strip(item))
        else:
            merged = _merge_map(out[index], item, path)
            if merged is _DELETE:
                out.pop(index)
            else:
                out[index] = merged
    return out


def _strip(value: Any) -> Any:
    """A patch value stored as is, without its directives."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
