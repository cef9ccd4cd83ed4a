"""The router of a model service: one address in front of its replicas (standard library).

Runs in its own container on the service's network, so the service keeps answering when
the Jupyter server stops. It checks API keys (SHA-256 hashes in its config), picks a
version by the traffic weights, then a ready replica of it (health-probed every half
second), and retries a request that fails on the way (a replica killed mid-request) on
another replica. It counts requests and latencies per version for ``GET services/<name>``.

Its config (versions, weights, replica addresses, key hashes) is pushed by the server
(``PUT /_dss/config`` with the admin token) and kept in its state folder, so a restarted
router serves the same. Started as ``python -m dss_serving.router``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 64 * 1024 * 1024
PROBE_SECONDS = 0.5
LATENCIES_KEPT = 5000
ADMIN_HEADER = "X-DSS-Admin"
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(headers: Any) -> str | None:
    auth = headers.get("Authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("X-API-Key")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Routes:
    """The pushed config, which replicas answer, and the per-version statistics."""

    def __init__(self, state_file: str):
        self.state_file = state_file
        self.lock = threading.Lock()
        self.config: dict[str, Any] = {"versions": {}, "keys": []}
        self.ready: dict[str, bool] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._turn = 0
        if os.path.exists(state_file):
            with open(state_file) as f:
                self.config = json.load(f)

    def replace(self, config: dict[str, Any]) -> None:
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f)
        os.replace(tmp, self.state_file)
        with self.lock:
            self.config = config

    def replicas(self) -> list[str]:
        with self.lock:
            versions = self.config.get("versions", {})
            return [r for v in versions.values() for r in v.get("replicas", [])]

    def key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        digest = key_hash(key)
        with self.lock:
            hashes = list(self.config.get("keys", []))
        return any(hmac.compare_digest(digest, h) for h in hashes)

    def plan(self) -> list[tuple[str, str]]:
        """(version, replica) to try in order: a version drawn by weight among those with a
        ready replica, its ready replicas round-robin, then the other ready replicas."""
        with self.lock:
            versions = self.config.get("versions", {})
            ready = {
                v: [r for r in spec.get("replicas", []) if self.ready.get(r)]
                for v, spec in versions.items()
            }
            weights = {v: float(versions[v].get("weight", 0)) for v in ready if ready[v]}
            self._turn += 1
            turn = self._turn
        live = {v: w for v, w in weights.items() if w > 0}
        if not live:
            return []
        chosen = random.choices(list(live), weights=list(live.values()))[0]
        order: list[tuple[str, str]] = []
        for version in [chosen] + [v for v in live if v != chosen]:
            replicas = ready[version]
            start = turn % len(replicas)
            order += [(version, r) for r in replicas[start:] + replicas[:start]]
        return order

    def record(self, version: str, seconds: float, ok: bool) -> None:
        with self.lock:
            s = self.stats.setdefault(version, {"requests": 0, "errors": 0, "latencies": []})
            s["requests"] += 1
            s["errors"] += 0 if ok else 1
            s["latencies"].append(seconds)
            if len(s["latencies"]) > LATENCIES_KEPT:
                del s["latencies"][: len(s["latencies"]) - LATENCIES_KEPT]

    def summary(self) -> dict[str, Any]:
        with self.lock:
            out = {}
            for version, s in self.stats.items():
                p50, p99 = percentile(s["latencies"], 0.5), percentile(s["latencies"], 0.99)
                out[version] = {
                    "requests": s["requests"],
                    "errors": s["errors"],
                    "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                }
            return {"versions": out, "ready": dict(self.ready)}


def probe(routes: Routes) -> None:
    """Mark each replica ready or not from its ``/v2/health/ready``, forever."""
    while True:
        for replica in routes.replicas():
            host, _, port = replica.rpartition(":")
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=1)
                conn.request("GET", "/v2/health/ready")
                ok = conn.getresponse().status == 200
                conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
            with routes.lock:
                routes.ready[replica] = ok
        time.sleep(PROBE_SECONDS)


_local = threading.local()


def exchange(
    replica: str, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes, str] | None:
    """One request to a replica over this thread's kept-alive connection to it (a client's
    connection is served by one thread); a stale connection is retried once on a new one.
    None: the replica cannot be reached."""
    pool: dict[str, http.client.HTTPConnection] = _local.__dict__.setdefault("pool", {})
    for fresh in (replica not in pool, True):
        conn = pool.get(replica)
        if conn is None:
            host, _, port = replica.rpartition(":")
            conn = pool[replica] = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                pool.pop(replica, None)
            return response.status, raw, response.getheader("Content-Type", "application/json")
        except (OSError, http.client.HTTPException):
            conn.close()
            pool.pop(replica, None)
            if fresh:
                return None
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once (no delayed-ACK stall)
    server_version = "dss-router"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        sys.stdout.write(f"{format % args}\n")

    def reply(self, status: int, raw: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def error(self, status: int, message: str) -> None:
        self.reply(status, json.dumps({"error": message}).encode())

    def read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            self.error(
                413 if length.isdigit() else 411, "a Content-Length up to 64 MiB is required"
            )
            return None
        return self.rfile.read(int(length))

    def do_GET(self) -> None:
        self.serve("GET")

    def do_POST(self) -> None:
        self.serve("POST")

    def do_PUT(self) -> None:
        self.serve("PUT")

    def serve(self, method: str) -> None:
        routes: Routes = self.server.routes  # type: ignore[attr-defined]
        body = self.read_body()
        if body is None:
            return
        path = self.path.split("?", 1)[0]
        if path.startswith("/_dss/"):
            return self.admin(routes, method, path, body)
        if path.rstrip("/") == "/v2/health/live":
            return self.reply(200, b'{"live": true}')
        if path.rstrip("/") == "/v2/health/ready":
            ready = bool(routes.plan())
            return self.reply(200 if ready else 503, json.dumps({"ready": ready}).encode())
        if not routes.key_ok(presented_key(self.headers)):
            return self.error(
                401, "an API key of this service is required (Authorization: Bearer KEY)"
            )
        self.forward(routes, method, body)

    def admin(self, routes: Routes, method: str, path: str, body: bytes) -> None:
        token = os.environ.get("DSS_ROUTER_ADMIN_TOKEN", "")
        given = self.headers.get(ADMIN_HEADER, "")
        if not token or not hmac.compare_digest(token.encode(), given.encode()):
            return self.error(401, "the admin token is required")
        if path == "/_dss/stats" and method == "GET":
            return self.reply(200, json.dumps(routes.summary()).encode())
        if path == "/_dss/config" and method == "GET":
            with routes.lock:
                return self.reply(200, json.dumps(routes.config).encode())
        if path == "/_dss/config" and method == "PUT":
            try:
                config = json.loads(body)
                assert isinstance(config, dict) and isinstance(config.get("versions"), dict)
            except (ValueError, AssertionError):
                return self.error(400, "expected a config object with 'versions'")
            routes.replace(config)
            return self.reply(200, b'{"ok": true}')
        self.error(404, f"no admin route {method} {path}")

    def forward(self, routes: Routes, method: str, body: bytes) -> None:
        plan = routes.plan()
        if not plan:
            return self.error(503, "no replica of this service is ready")
        headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
        headers["Content-Length"] = str(len(body))
        for version, replica in plan[:4]:
            started = time.perf_counter()
            answer = exchange(replica, method, self.path, body, headers)
            if answer is None:
                with routes.lock:
                    routes.ready[replica] = False  # until its next good probe
                continue  # the next replica (predictions are idempotent)
            status, raw, content_type = answer
            if status == 503:  # still loading: try another
                continue
            routes.record(version, time.perf_counter() - started, status < 500)
            return self.reply(status, raw, content_type)
        self.error(503, "every replica tried failed; the request was not served")


def main() -> None:
    folder = os.environ.get("DSS_ROUTER_STATE", "/srv/dss/state")
    routes = Routes(os.path.join(folder, "config.json"))
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("DSS_PORT", "8080"))), Handler)
    server.daemon_threads = True
    server.routes = routes  # type: ignore[attr-defined]
    threading.Thread(target=probe, args=(routes,), daemon=True).start()
    print(f"router listening on port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
