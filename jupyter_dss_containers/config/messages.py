"""Schema violations in words: one line a person can act on, at the path it concerns."""

from __future__ import annotations

import json
from typing import Any

import jsonschema


def leaf_errors(errors: Any) -> list[jsonschema.ValidationError]:
    """Keep the most specific errors: a wrong field deep down, not 'the root is invalid'."""
    out = []
    for error in errors:
        if error.validator in ("anyOf", "oneOf") and error.context and not _is_exclusive(error):
            deepest = max(len(e.absolute_path) for e in error.context)
            if deepest > len(error.absolute_path):
                out.extend(leaf_errors(e for e in error.context if len(e.absolute_path) == deepest))
                continue
        out.append(error)
    return out


def _is_exclusive(error: jsonschema.ValidationError) -> bool:
    return error.validator == "oneOf" and "from" in json.dumps(error.validator_value)


def dotted(path: Any) -> str:
    out = ""
    for part in path:
        if not isinstance(part, int) and not str(part).isprintable():
            part = repr(part)  # a key with a line break or control character, shown quoted
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def kind_of(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "nothing (null)",
    }
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value, default=str)[:60]})"


def explain(error: jsonschema.ValidationError) -> str:
    """One line a person can act on, for one schema violation."""
    schema, value, kind = error.schema, error.instance, error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed), key=str) if isinstance(value, dict) else []
        names = ", ".join(repr(e) for e in extra)
        return f"unknown key {names} (expected one of: {', '.join(allowed)})"
    if kind == "required":
        return f"missing required key {error.message.split(' ')[0]}"
    if kind == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"expected {wanted}, got {kind_of(value)}"
    if kind == "enum":
        return f"expected one of {', '.join(map(repr, error.validator_value))}, got {value!r}"
    if kind == "const":
        return f"expected {error.validator_value!r}, got {value!r}"
    if "propertyNames" in error.absolute_schema_path:
        description = schema.get("description") or "a valid name"
        return f"invalid name {value!r}: expected {description}"
    if kind == "pattern":
        description = schema.get("description") or f"matching {error.validator_value}"
        return f"expected {description}, got {value!r}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        word = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"expected a number {word[kind]} {error.validator_value}, got {value!r}"
    if kind == "minLength":
        return "expected a non-empty string"
    if kind == "oneOf" and _is_exclusive(error):
        return "expected exactly one of 'from' (an image to build on) or 'bootstrap: debian'"
    if kind == "not":
        other = "kubernetes" if "kubernetes" in json.dumps(error.validator_value) else "docker"
        return f"a '{other}' section does not belong to a config whose backend is not {other}"
    if kind == "anyOf" and "description" in schema:
        return f"expected {schema['description']}, got {kind_of(value)}"
    return error.message
