"""Model serving: our service (router + replicas on the local Docker daemon) against
MLflow's own ``mlflow models serve`` on the same model, same machine, same run.

Both serve a scikit-learn pipeline (StandardScaler + LogisticRegression) fitted on
breast_cancer. For each of single-row and 100-row requests and 1 and 8 clients, each
client sends requests one after another over one kept-alive connection for ``--seconds``;
reported: requests per second, latency p50 and p99 (ms), failures. MLflow runs from a
virtual environment with mlflow installed (``--mlflow-venv``; its ``bin`` on PATH, as
``mlflow models serve`` execs uvicorn), one worker; ours with ``--replicas`` replicas.

    python -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow
    python benchmarks/model_serving.py --mlflow-venv /tmp/mlflow-venv --json /tmp/serving.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TRAIN = """
import sys
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
X, y = load_breast_cancer(return_X_y=True, as_frame=True)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
"""
SAVE_MLFLOW = TRAIN + "import mlflow.sklearn\nmlflow.sklearn.save_model(model, sys.argv[1])\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load(
    host: str, port: int, path: str, body: bytes, headers: dict, clients: int, seconds: float
) -> dict:
    """``clients`` threads, each on its own kept-alive connection, for ``seconds``."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine, failed = [], 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
                ok = False
            if ok:
                mine.append(time.perf_counter() - started)
            else:
                failed += 1
        with lock:
            latencies.extend(mine)
            failures[0] += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "requests": len(latencies),
        "failures": failures[0],
    }


def wait_http(host: str, port: int, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"nothing answered on {host}:{port}{path} within {timeout} s")


def start_mlflow(venv: Path, folder: Path) -> tuple[subprocess.Popen, int]:
    model_dir = folder / "mlflow-model"
    subprocess.run([str(venv / "bin" / "python"), "-c", SAVE_MLFLOW, str(model_dir)], check=True)
    port = free_port()
    env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    argv = [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir)]
    argv += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    log = open(folder / "mlflow.log", "wb")  # noqa: SIM115 (kept open for the process)
    proc = subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_http("127.0.0.1", port, "/ping")
    return proc, port


def start_ours(replicas: int) -> tuple[Any, str, int, str]:
    from jupyter_dss_containers.config import load_config
    from jupyter_dss_containers.images import resolve_image
    from jupyter_dss_containers.services import engine

    namespace: dict[str, Any] = {}
    exec(TRAIN, namespace)  # the same model, fitted here (this process's own code)
    config_file = load_config(None)
    config = config_file.execution_configs["local"]
    engine.remove(config, "bench", "bench-cancer", missing_ok=True)
    row, key = engine.deploy(
        config,
        resolve_image(config_file, config),
        "bench",
        "bench-cancer",
        "v1",
        replicas,
        pickle.dumps(namespace["model"]),
        {"platform": "sklearn"},
    )
    port = int(row["url"].rsplit(":", 1)[1])
    return config, key, port, namespace


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mlflow-venv", type=Path, default=Path("/tmp/mlflow-venv"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from jupyter_dss_containers.services import engine

    folder = Path(tempfile.mkdtemp(prefix="dss-serving-bench-"))
    config, key, ours_port, namespace = start_ours(args.replicas)
    mlflow, mlflow_port = start_mlflow(args.mlflow_venv, folder)
    X = namespace["X"]
    results = []
    try:
        for rows in (1, 100):
            records = json.loads(X.head(rows).to_json(orient="records"))
            ours_body = json.dumps(records).encode()
            mlflow_body = json.dumps({"dataframe_records": records}).encode()
            for clients in (int(c) for c in args.clients.split(",")):
                for name, port, path, body, headers in (
                    (
                        "dss-containers",
                        ours_port,
                        "/predict",
                        ours_body,
                        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                    ),
                    (
                        "mlflow",
                        mlflow_port,
                        "/invocations",
                        mlflow_body,
                        {"Content-Type": "application/json"},
                    ),
                ):
                    load("127.0.0.1", port, path, body, headers, 1, 1.0)  # warm-up
                    numbers = load("127.0.0.1", port, path, body, headers, clients, args.seconds)
                    results.append({"server": name, "rows": rows, "clients": clients, **numbers})
                    print(json.dumps(results[-1]), flush=True)
    finally:
        os.killpg(mlflow.pid, 15)
        engine.remove(config, "bench", "bench-cancer", missing_ok=True)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "replicas": args.replicas}
    print("\n| server | rows | clients | req/s | p50 ms | p99 ms | failures |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['server']} | {r['rows']} | {r['clients']} | {r['requests_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['failures']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
