"""Request and response shapes of a model service: plain ``/predict`` JSON and the Open
Inference Protocol (KServe V2), as pure functions.

Runs inside the serving container (copied there with :mod:`.runtime`), so it needs the
standard library only, plus pandas/numpy where a frame is built. Every refusal is a
:class:`BadRequest` whose text names the field or column at fault; nothing here raises a
bare exception on user input.
"""

from __future__ import annotations

import math
from typing import Any

#: the V2 datatypes a request may name, and the Python types their data may hold
V2_TYPES = {
    "BOOL": (bool,),
    "INT8": (int,),
    "INT16": (int,),
    "INT32": (int,),
    "INT64": (int,),
    "UINT8": (int,),
    "UINT16": (int,),
    "UINT32": (int,),
    "UINT64": (int,),
    "FP16": (int, float),
    "FP32": (int, float),
    "FP64": (int, float),
    "BYTES": (str,),
}
MAX_ROWS = 100_000


class BadRequest(Exception):
    """Input a client can fix: answered with ``status`` and the message, never a traceback."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _names(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


def check_columns(given: list[str], features: list[str] | None) -> None:
    """400 naming the missing and unknown columns (the model's ``feature_names_in_``)."""
    if features is None:
        return
    missing = [f for f in features if f not in given]
    unknown = [g for g in given if g not in features]
    parts = []
    if missing:
        parts.append(f"missing column(s) {_names(missing)}")
    if unknown:
        parts.append(f"unknown column(s) {_names(unknown)}")
    if parts:
        raise BadRequest("; ".join(parts) + f" (the model expects: {_names(features)})")


def _scalar(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest(f"{where}: {value!r} is not a finite number")
        return value
    raise BadRequest(
        f"{where}: expected a number, string, boolean or null, got {type(value).__name__}"
    )


def table_of(body: Any, features: list[str] | None) -> dict[str, list[Any]]:
    """The columns of a ``/predict`` body: records ``[{col: v}]``, columns ``{col: [..]}``,
    or either under ``"records"`` / ``"columns"``."""
    if isinstance(body, dict) and set(body) == {"records"}:
        body = body["records"]
    elif isinstance(body, dict) and set(body) == {"columns"}:
        body = body["columns"]
    if isinstance(body, list):
        return _records(body, features)
    if isinstance(body, dict) and body and all(isinstance(v, list) for v in body.values()):
        return _columns(body, features)
    raise BadRequest("expected JSON records [{column: value}, ...] or columns {column: [values]}")


def _records(rows: list[Any], features: list[str] | None) -> dict[str, list[Any]]:
    if not rows:
        raise BadRequest("no rows: send at least one record")
    if len(rows) > MAX_ROWS:
        raise BadRequest(f"{len(rows)} rows: at most {MAX_ROWS} per request", 413)
    names = features
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(f"record {i}: expected an object {{column: value}}")
        if names is None:
            names = list(row)
        check_columns(list(row), names)
    assert names is not None
    return {
        n: [_scalar(row[n], f"record {i}, column {n!r}") for i, row in enumerate(rows)]
        for n in names
    }


def _columns(columns: dict[str, list[Any]], features: list[str] | None) -> dict[str, list[Any]]:
    check_columns(list(columns), features)
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise BadRequest(f"columns have different lengths: {sorted(lengths)}")
    if 0 in lengths:
        raise BadRequest("no rows: the columns are empty")
    if max(lengths) > MAX_ROWS:
        raise BadRequest(f"{max(lengths)} rows: at most {MAX_ROWS} per request", 413)
    names = features or list(columns)
    return {
        n: [_scalar(v, f"column {n!r}, row {i}") for i, v in enumerate(columns[n])] for n in names
    }


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item))
    return out


def _v2_input(item: Any, i: int) -> tuple[str, list[int], list[Any]]:
    """(name, shape, flat data) of one V2 input tensor, checked."""
    if not isinstance(item, dict):
        raise BadRequest(f"inputs[{i}]: expected an object with name, shape, datatype, data")
    for key in ("name", "shape", "datatype", "data"):
        if key not in item:
            raise BadRequest(f"inputs[{i}]: the field {key!r} is missing")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{i}].name: expected a non-empty string")
    if not (
        isinstance(shape, list)
        and 1 <= len(shape) <= 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadRequest(f"inputs[{i}] ({name!r}).shape: expected [rows] or [rows, columns]")
    if datatype not in V2_TYPES:
        raise BadRequest(f"inputs[{i}] ({name!r}).datatype: {datatype!r} is not a V2 datatype")
    data = _flat(item["data"])
    if len(data) != math.prod(shape):
        raise BadRequest(
            f"inputs[{i}] ({name!r}): shape {shape} needs {math.prod(shape)} values, "
            f"data has {len(data)}"
        )
    kinds = V2_TYPES[datatype]
    for j, value in enumerate(data):
        if (isinstance(value, bool) and datatype != "BOOL") or not isinstance(value, kinds):
            raise BadRequest(f"inputs[{i}] ({name!r}).data[{j}]: {value!r} is not {datatype}")
        _scalar(value, f"inputs[{i}] ({name!r}).data[{j}]")
    return name, shape, data


def table_of_v2(body: Any, features: list[str] | None) -> dict[str, list[Any]]:
    """The columns of a V2 ``infer`` body: one input per column (``shape [n]`` or
    ``[n, 1]``), or one ``[n, k]`` input holding the k feature columns in order."""
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object with 'inputs'")
    unknown = sorted(set(body) - {"id", "inputs", "outputs", "parameters"})
    if unknown:
        raise BadRequest(f"unknown field(s) {_names(unknown)} in the inference request")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the field 'inputs' must be a non-empty list of tensors")
    tensors = [_v2_input(item, i) for i, item in enumerate(inputs)]
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] != 1:
        name, (_rows, width), data = tensors[0]
        names = features or [f"x{k}" for k in range(width)]
        if width != len(names):
            raise BadRequest(
                f"inputs[0] ({name!r}): {width} columns, the model expects {len(names)}"
            )
        return _columns({n: data[k::width] for k, n in enumerate(names)}, features)
    columns: dict[str, list[Any]] = {}
    for i, (name, shape, data) in enumerate(tensors):
        if len(shape) == 2 and shape[1] != 1:
            raise BadRequest(f"inputs[{i}] ({name!r}): one column per input, shape [rows]")
        if name in columns:
            raise BadRequest(f"inputs[{i}]: the column {name!r} is given twice")
        columns[name] = data
    return _columns(columns, features)


def v2_datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def v2_response(
    name: str,
    version: str,
    request_id: Any,
    predictions: list[Any],
    proba: list[list[float]] | None,
) -> dict[str, Any]:
    """The V2 inference response: ``predict`` and, for a classifier, ``predict_proba``."""
    outputs = [
        {
            "name": "predict",
            "shape": [len(predictions)],
            "datatype": v2_datatype(predictions),
            "data": predictions,
        }
    ]
    if proba is not None:
        width = len(proba[0]) if proba else 0
        outputs.append(
            {
                "name": "predict_proba",
                "shape": [len(proba), width],
                "datatype": "FP64",
                "data": [p for row in proba for p in row],
            }
        )
    reply: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if isinstance(request_id, str):
        reply["id"] = request_id
    return reply


def v2_metadata(name: str, version: str, meta: dict[str, Any]) -> dict[str, Any]:
    """``GET /v2/models/<name>``: inputs from the model's ``feature_names_in_``."""
    features = meta.get("features") or []
    outputs = [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]
    if meta.get("classes") is not None:
        outputs.append(
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(meta["classes"])]}
        )
    return {
        "name": name,
        "versions": [version],
        "platform": meta.get("platform", "sklearn"),
        "inputs": [{"name": f, "datatype": "FP64", "shape": [-1]} for f in features],
        "outputs": outputs,
    }
