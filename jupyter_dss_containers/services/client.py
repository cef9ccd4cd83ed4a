"""Deploy and operate model services from a kernel or a script, through the server's REST API.

The model is serialised here, in the caller's own process (cloudpickle, so classes and
functions defined in the notebook travel too), and sent as bytes: the server stores them
without loading them; only the serving containers unpickle them.

Which server: ``server_url``/``token`` given, else ``$DSS_CONTAINERS_SERVER_URL`` and
``$DSS_CONTAINERS_SERVER_TOKEN`` (or ``$JUPYTER_TOKEN``), else the first running Jupyter
server of this user (``jupyter_server``'s runtime files: a host kernel finds its server).
``$DSS_CONTAINERS_SERVER_HEADERS`` (a JSON object) adds headers an authenticating proxy
in front of the server needs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

API = "dss-containers/api/services"


class ServiceAPIError(RuntimeError):
    """The server refused or failed; the message is the server's."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass
class Server:
    url: str
    token: str
    headers: dict[str, str]

    def call(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        request = urllib.request.Request(
            self.url.rstrip("/") + "/" + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("message", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace")
            raise ServiceAPIError(exc.code, message) from None


def server(url: str | None = None, token: str | None = None) -> Server:
    """The server to talk to (see the module's docstring)."""
    headers = json.loads(os.environ.get("DSS_CONTAINERS_SERVER_HEADERS") or "{}")
    url = url or os.environ.get("DSS_CONTAINERS_SERVER_URL")
    if token is None:
        token = os.environ.get("DSS_CONTAINERS_SERVER_TOKEN") or os.environ.get("JUPYTER_TOKEN")
    if not url:
        from jupyter_server.serverapp import list_running_servers

        running = list(list_running_servers())
        if not running:
            raise ServiceAPIError(
                0, "no Jupyter server found: pass server_url= or set $DSS_CONTAINERS_SERVER_URL"
            )
        url, token = running[0]["url"], token or running[0].get("token", "")
    return Server(url, token or "", headers)


def serialise(model: Any) -> tuple[bytes, dict[str, Any]]:
    """(the model's bytes, what it is): cloudpickle where installed, else pickle. The result
    of a ``train`` job (``jobs.TrainResult``) stands for its fitted model."""
    from ..jobs.api import TrainResult

    if isinstance(model, TrainResult):
        model = model.model
    data, packages = _dump(model)
    kind = type(model)
    packages |= {base.__module__.partition(".")[0] for base in kind.__mro__}  # its bases' too
    meta: dict[str, Any] = {
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "platform": kind.__module__.split(".")[0],
        "python": ".".join(map(str, sys.version_info[:3])),
    }
    for lib in MODEL_LIBRARIES:
        module = sys.modules.get(lib)
        if lib in packages and module is not None:
            meta.setdefault("libraries", {})[lib] = getattr(module, "__version__", "")
    return data, meta


#: the libraries whose versions a service image is checked for, when the model holds their objects
MODEL_LIBRARIES = ("sklearn", "xgboost", "pandas", "numpy")


def _dump(model: Any) -> tuple[bytes, set[str]]:
    """The model's bytes (cloudpickle where installed, else pickle) and the top-level
    packages of every object in them: what the model needs, not what the kernel imported."""
    try:
        from cloudpickle import CloudPickler as Pickler
    except ModuleNotFoundError:
        from pickle import Pickler  # type: ignore[assignment]
    packages: set[str] = set()

    class Recording(Pickler):  # type: ignore[misc,valid-type]
        def persistent_id(self, obj: Any) -> None:
            packages.add(type(obj).__module__.partition(".")[0])
            return None

    buffer = io.BytesIO()
    Recording(buffer, protocol=pickle.DEFAULT_PROTOCOL).dump(model)
    return buffer.getvalue(), packages


def _model_body(model: Any) -> dict[str, Any]:
    data, meta = serialise(model)
    return {"model": base64.b64encode(data).decode(), "meta": meta}


def deploy(
    model: Any,
    name: str,
    config: str,
    replicas: int = 1,
    version: str = "v1",
    *,
    server_url: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Serve ``model`` (a fitted estimator or pipeline) as ``name`` on ``config`` with N
    replicas; returns the service, with its API key (shown this once: keep it)."""
    body = {"name": name, "config": config, "replicas": replicas, "version": version}
    return server(server_url, token).call("POST", API, {**body, **_model_body(model)})


def add_version(
    name: str,
    model: Any,
    version: str,
    replicas: int = 1,
    traffic: dict[str, float] | None = None,
    **where: Any,
) -> dict[str, Any]:
    """A new version; it gets ``traffic`` (default: all of it) once its replicas are ready."""
    body: dict[str, Any] = {"version": version, "replicas": replicas, **_model_body(model)}
    if traffic is not None:
        body["traffic"] = traffic
    return server(**where).call("POST", f"{API}/{name}/versions", body)


def set_traffic(name: str, traffic: dict[str, float], **where: Any) -> dict[str, Any]:
    """New weights, e.g. ``{"v1": 90, "v2": 10}``; a rollback is the old weights again."""
    return server(**where).call("POST", f"{API}/{name}/versions", {"traffic": traffic})


def services(**where: Any) -> list[dict[str, Any]]:
    return server(**where).call("GET", API)["services"]


def service(name: str, **where: Any) -> dict[str, Any]:
    return server(**where).call("GET", f"{API}/{name}")


def logs(name: str, tail: int = 100, **where: Any) -> str:
    return server(**where).call("GET", f"{API}/{name}/logs?tail={int(tail)}")["logs"]


def undeploy(name: str, **where: Any) -> None:
    server(**where).call("DELETE", f"{API}/{name}")
