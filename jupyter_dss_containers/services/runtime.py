"""The model server that runs inside a serving container (one replica of one version).

Standard library HTTP (``ThreadingHTTPServer``, HTTP/1.1 keep-alive for the router) plus
the model's own libraries (pandas, numpy, scikit-learn, joblib/cloudpickle of the image).
The model file was written by the user's kernel and is unpickled here only, in the
container, never in the Jupyter server. Routes: ``POST /predict``, ``POST
/v2/models/<name>/infer``, ``GET /v2/health/live|ready``, ``GET /v2/models/<name>``.

Started as ``python -m dss_serving.runtime`` with ``DSS_SERVICE_NAME``,
``DSS_SERVICE_VERSION`` and ``DSS_MODEL_DIR`` (holding ``model.pkl`` and ``meta.json``).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    from . import protocol
except ImportError:  # run as a script
    import protocol  # type: ignore[no-redef]

MAX_BODY = 64 * 1024 * 1024
PORT = 8080


class Model:
    """The loaded model and what the kernel said about it (features, classes)."""

    def __init__(self, folder: str):
        with open(os.path.join(folder, "meta.json")) as f:
            self.meta: dict[str, Any] = json.load(f)
        with open(os.path.join(folder, "model.pkl"), "rb") as f:
            self.model = pickle.load(f)  # the user's own model, in its own container
        features = getattr(self.model, "feature_names_in_", None)
        self.features: list[str] | None = (
            [str(c) for c in features] if features is not None else None
        )
        self.meta["features"] = self.features
        self.has_proba = hasattr(self.model, "predict_proba")
        classes = getattr(self.model, "classes_", None)
        self.meta["classes"] = (
            [_plain(c) for c in classes] if classes is not None and self.has_proba else None
        )

    def predict(self, columns: dict[str, list[Any]]) -> tuple[list[Any], list[list[float]] | None]:
        import pandas as pd

        frame = pd.DataFrame(columns)
        try:
            predictions = [_plain(p) for p in self.model.predict(frame)]
            proba = None
            if self.has_proba:
                proba = [[float(p) for p in row] for row in self.model.predict_proba(frame)]
        except (ValueError, TypeError, KeyError) as exc:
            raise protocol.BadRequest(f"the model cannot score this input: {exc}", 422) from None
        return predictions, proba


def _plain(value: Any) -> Any:
    """A numpy scalar as a JSON value."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once (no delayed-ACK stall)
    server_version = "dss-serving"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # one line per request, stdout
        sys.stdout.write(f"{self.address_string()} {format % args}\n")

    def reply(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise protocol.BadRequest("a Content-Length header is required", 411)
        if int(length) > MAX_BODY:
            raise protocol.BadRequest(f"the body has {length} bytes; at most {MAX_BODY}", 413)
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise protocol.BadRequest(f"the body is not JSON: {exc}") from None

    def do_GET(self) -> None:
        self.serve("GET")

    def do_POST(self) -> None:
        self.serve("POST")

    def serve(self, method: str) -> None:
        try:
            status, data = self.route(method, self.path.split("?", 1)[0].rstrip("/"))
        except protocol.BadRequest as exc:
            status, data = exc.status, {"error": str(exc)}
        except Exception as exc:  # a bug or a broken model: said, never a traceback
            status, data = 500, {"error": f"prediction failed: {type(exc).__name__}"}
        self.reply(status, data)

    def route(self, method: str, path: str) -> tuple[int, Any]:
        state: State = self.server.state  # type: ignore[attr-defined]
        name, version = state.name, state.version
        if path == "/v2/health/live" and method == "GET":
            return 200, {"live": True}
        if path == "/v2/health/ready" and method == "GET":
            return (200 if state.model else 503), {"ready": state.model is not None}
        if path in ("/v2", "") and method == "GET":
            return 200, {"name": "dss-serving", "version": version, "extensions": []}
        model = state.model
        if path == "/predict" and method == "POST":
            columns = protocol.table_of(self.body(), self._ready(model).features)
            predictions, proba = model.predict(columns)  # type: ignore[union-attr]
            reply: dict[str, Any] = {"predictions": predictions, "version": version}
            if proba is not None:
                reply["probabilities"] = proba
                reply["classes"] = model.meta["classes"]  # type: ignore[union-attr]
            return 200, reply
        prefix = f"/v2/models/{name}"
        if path in (prefix, f"{prefix}/versions/{version}") and method == "GET":
            return 200, protocol.v2_metadata(name, version, self._ready(model).meta)
        if path in (f"{prefix}/ready", f"{prefix}/versions/{version}/ready") and method == "GET":
            return (200 if model else 503), {"name": name, "ready": model is not None}
        if path in (f"{prefix}/infer", f"{prefix}/versions/{version}/infer") and method == "POST":
            body = self.body()
            columns = protocol.table_of_v2(body, self._ready(model).features)
            predictions, proba = model.predict(columns)  # type: ignore[union-attr]
            return 200, protocol.v2_response(name, version, body.get("id"), predictions, proba)
        if path.startswith("/v2/models/"):
            return 404, {"error": f"no model named {path.split('/')[3]!r} here (this is {name!r})"}
        return 404, {"error": f"no route {method} {path or '/'}"}

    @staticmethod
    def _ready(model: Model | None) -> Model:
        if model is None:
            raise protocol.BadRequest("the model is still loading", 503)
        return model


class State:
    def __init__(self, name: str, version: str):
        self.name, self.version = name, version
        self.model: Model | None = None


def main() -> None:
    state = State(
        os.environ.get("DSS_SERVICE_NAME", "model"), os.environ.get("DSS_SERVICE_VERSION", "1")
    )
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("DSS_PORT", PORT))), Handler)
    server.daemon_threads = True
    server.state = state  # type: ignore[attr-defined]

    def load() -> None:
        try:
            state.model = Model(os.environ.get("DSS_MODEL_DIR", "/srv/dss/model"))
            print(f"model {state.name} version {state.version} loaded", flush=True)
        except Exception as exc:  # said in the replica's log; ready stays 503
            print(
                f"model {state.name} could not be loaded: {type(exc).__name__}: {exc}", flush=True
            )

    threading.Thread(target=load, daemon=True).start()
    print(f"serving {state.name} version {state.version} on port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
