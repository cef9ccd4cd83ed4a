"""What a job hands back, as data: a JSON document the service checks, and opaque bytes.

A job's container is the job owner's code, so nothing it writes may run where the service
runs (the Jupyter server, for the REST API). The runner therefore writes two files:

- ``result.json``: the outcome as plain data, which cannot carry code: ``ok``, the error
  (``ename``, ``evalue``, ``traceback``, ``missing_module``), ``displays`` (MIME bundles
  whose values are strings) and plain fields (``metrics``, ``train_seconds``, ``task``,
  ``labels``, ``confusion_matrix``, ...). The service parses it here: size-bounded, every
  field's type checked, unknown fields refused.
- ``values.pkl``: the Python values (``--out`` variables, a fitted model, predictions, a
  recipe's return value) cloudpickled. The service keeps these bytes as they are, in memory
  and in its store, and never deserializes them; only the blocking API in the caller's
  own kernel (:mod:`.api`) loads them, for the jobs that kernel submitted.

An R job's ``--out`` data frames travel as their CSV files, turned into DataFrames on the
kernel side too. This module is pure: no I/O, no unpickling.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESULT_FILE = "result.json"
VALUES_FILE = "values.pkl"

#: ``type/subtype`` as IANA writes them (``image/svg+xml``, ``application/vnd.x+json``)
MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


class BadResult(ValueError):
    """The job's result document is too big, not JSON, or not of the expected shape."""


@dataclass
class JobResult:
    """A finished job's result as the service holds it: checked data and opaque bytes."""

    #: the checked JSON document
    document: dict[str, Any]
    #: the cloudpickled Python values, never deserialized by the service (None: none)
    values: bytes | None = None
    #: an R job's ``--out`` data frames as CSV bytes, by name
    tables: dict[str, bytes] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.document.get("ok"))

    @property
    def displays(self) -> list[dict[str, str]]:
        return list(self.document.get("displays", []))

    def fields(self) -> dict[str, Any]:
        """The plain-data fields (what the REST API shows besides the displays)."""
        return {k: v for k, v in self.document.items() if k not in ("ok", "displays")}


# --------------------------------------------------------------------------- checks


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _bundle(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and MIME.match(k) and isinstance(v, str) for k, v in value.items()
    )


def _metrics(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or _is_number(v)) for k, v in value.items()
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: every field a result document may hold, and the check its value must pass
FIELDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "ok": ("a boolean", lambda v: isinstance(v, bool)),
    "ename": ("a string", lambda v: isinstance(v, str)),
    "evalue": ("a string", lambda v: isinstance(v, str)),
    "traceback": ("a string", lambda v: isinstance(v, str)),
    "missing_module": ("a string or null", lambda v: v is None or isinstance(v, str)),
    "displays": ("a list of MIME bundles with string values", _list_of(_bundle)),
    "values": ("a list of strings", _list_of(lambda v: isinstance(v, str))),
    "tables": ("a list of strings", _list_of(lambda v: isinstance(v, str))),
    "task": ("a string", lambda v: isinstance(v, str)),
    "train_seconds": ("a number", _is_number),
    "metrics": ("an object of numbers", _metrics),
    "labels": ("a list of strings, numbers or booleans", _list_of(_is_scalar)),
    "confusion_matrix": ("a list of lists of integers", _list_of(_list_of(_is_int))),
    "confusion_matrix_png": ("a string", lambda v: isinstance(v, str)),
}
ERROR_FIELDS = ("ename", "evalue", "traceback")


def check_document(document: Any) -> dict[str, Any]:
    """``document`` itself when it has the shape of a result; else :class:`BadResult`."""
    if not isinstance(document, dict):
        raise BadResult(f"expected a JSON object, got {type(document).__name__}")
    for key, value in document.items():
        if key not in FIELDS:
            raise BadResult(f"unknown field {str(key)[:40]!r}")
        expected, check = FIELDS[key]
        if not check(value):
            raise BadResult(f"field {key!r}: expected {expected}")
    if "ok" not in document:
        raise BadResult("field 'ok' is missing")
    if not document["ok"]:
        missing = [k for k in ERROR_FIELDS if k not in document]
        if missing:
            raise BadResult(f"a failed result lacks {', '.join(missing)}")
    return document


def parse_document(data: bytes, limit: int) -> dict[str, Any]:
    """The checked document in ``data`` (at most ``limit`` bytes of UTF-8 JSON)."""
    if len(data) > limit:
        raise BadResult(f"it is {len(data)} bytes, over the limit of {limit}")
    try:
        document = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise BadResult("it is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: bad JSON, huge integers
        raise BadResult(f"it is not JSON: {str(exc)[:200]}") from None
    return check_document(document)


def dump_document(document: dict[str, Any]) -> bytes:
    """The document as stored (and as the runner writes it)."""
    return json.dumps(document, separators=(",", ":")).encode()


def failure(ename: str, evalue: str, traceback: str = "") -> dict[str, Any]:
    """A failed result's document."""
    return {
        "ok": False,
        "ename": ename,
        "evalue": evalue,
        "traceback": traceback,
        "missing_module": None,
    }
