"""Bounds on what a request may carry, checked before anything parses it.

A deeply nested JSON body (``[`` x 200000) makes the parser recurse until Python gives up,
an integer of thousands of digits makes ``int()`` refuse (Python's 4300-digit guard), and
``"²".isdigit()`` is true although ``int("²")`` fails: each was a 500. Here each is a 400
(413 for a body over the size limit) that says what was wrong.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import ReportedError

#: the largest JSON body our routes (and the core routes we wrap) read
MAX_BODY_BYTES = 1024**2
#: the deepest nesting of arrays and objects a body may have
MAX_DEPTH = 64
#: the most digits an integer may have (a timeout, a count: far fewer are ever needed)
MAX_INT_DIGITS = 30

_WORDS = {str: "a string", dict: "an object", list: "a list", bool: "true or false"}
_TOKENS = re.compile(rb'\\.|["\[\]{}]', re.S)


class BadInput(ReportedError):
    """A request whose body or query cannot be used, and why."""

    status = 400


class TooLarge(BadInput):
    status = 413


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when arrays and objects in ``raw`` nest deeper than ``limit`` (strings skipped),
    found by one pass over the brackets and quotes, without parsing."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth, in_string = 0, False
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if in_string:
            in_string = token != b'"'
        elif token == b'"':
            in_string = True
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document in ``raw``; :class:`BadInput` (or :class:`TooLarge`) saying why not."""
    if len(raw) > max_bytes:
        raise TooLarge(f"the request body has {len(raw)} bytes; at most {max_bytes} are read")
    if too_deep(raw, max_depth):
        raise BadInput(f"the request body nests arrays or objects deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("the request body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON in the request body: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise BadInput(f"invalid JSON in the request body: {exc}") from None


def whole_number(text: str, name: str, low: int = 0, high: int | None = None) -> int:
    """``text`` as a whole number written in ASCII digits within [low, high]; else 400."""
    span = f"from {low} to {high}" if high is not None else f"of at least {low}"
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_INT_DIGITS):
        raise BadInput(f"{name!r} must be a whole number {span}, not {text[:40]!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise BadInput(f"{name!r} must be a whole number {span}, not {text[:40]!r}")
    return value


def object_body(raw: bytes, fields: dict[str, type | tuple[type, ...]]) -> dict[str, Any] | None:
    """A core route's JSON body, checked before the core handler reads it: None when empty,
    else an object whose listed fields (when present and not null) have the listed types."""
    if not raw or not raw.strip():
        return None
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadInput(f"expected a JSON object in the request body, got {type(body).__name__}")
    for key, kind in fields.items():
        value = body.get(key)
        if value is not None and not isinstance(value, kind):
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(_WORDS.get(k, k.__name__) for k in kinds)
            raise BadInput(f"{key!r} must be {names}, not {json.dumps(value)[:40]}")
    return body
