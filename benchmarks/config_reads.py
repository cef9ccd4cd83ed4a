"""What reading the config file costs a request: kernel spec listing and ``GET configs``.

    python benchmarks/config_reads.py [--runs 20] [--warmup 3] [--configs 12] [--json out.json]

A real ``jupyter server`` subprocess (127.0.0.1, token auth) with the extension and a
config file of ``--configs`` execution configs and a few code environments (each config
gives several kernel specs); the script times, one after another, ``GET /api/kernelspecs``
(the kernel picker: every spec comes live from the config file) and
``GET /dss-containers/api/configs``, then in this process ``load_config`` itself, the file
unchanged. Run it with ``PYTHONPATH`` naming the tree to measure (the server inherits it).
Nothing is asserted and no container is started; it prints medians (and ``--json`` writes
the samples). The machine's load is printed too: on a shared host, compare runs made
back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run as a script
from jupyterserver import server_argv

TOKEN = "dss-bench-token"


def config_text(n_configs: int) -> str:
    lines = [
        "groups: {bench: [analysts]}",
        "code_envs:",
        "  sk: {packages: [scikit-learn==1.5.2], available_for: all}",
        "  xgb: {packages: [xgboost==2.1.1], available_for: all}",
        "base_images:",
        "  with-r: {bootstrap: debian, with_r: true}",
        "execution_configs:",
    ]
    for i in range(n_configs):
        image = "with-r" if i % 2 else "default"
        lines += [
            f"  c{i}:",
            "    backend: docker",
            f"    image: {image}",
            f"    description: config {i}",
            "    docker: {resources: {memory: 512m, cpus: 1}}",
            "    permissions: {groups: ['*']}",
        ]
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> float:
    request = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            get(url + "api/status")
            return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"server did not answer:\n{log.read_text()[-3000:]}")


def in_process(path: Path, runs: int) -> list[float]:
    from jupyter_dss_containers.config import load_config

    load_config(path)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        load_config(path)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="dss-config-bench-"))
    config = folder / "dss_containers.yaml"
    config.write_text(config_text(args.configs))
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(config))
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[var] = str(folder / var)
    port = free_port()
    log = folder / "server.log"
    argv = server_argv(
        port,
        TOKEN,
        folder,
        "--DSSContainersExtension.reap_on_start=False",
        "--ServerApp.log_level=WARN",
    )
    url = f"http://127.0.0.1:{port}/"
    routes = {"kernelspecs": url + "api/kernelspecs", "configs": url + "dss-containers/api/configs"}
    samples: dict[str, list[float]] = {name: [] for name in routes}
    with log.open("wb") as out:
        # cwd: not the checkout, whose package `python -m` would import before PYTHONPATH
        proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(url, proc, log)
        for name, route in routes.items():
            for i in range(args.warmup + args.runs):
                elapsed = get(route)
                if i >= args.warmup:
                    samples[name].append(elapsed)
    finally:
        proc.terminate()
        proc.wait(15)
    samples["load_config (in process)"] = in_process(config, args.runs * 10)

    print(f"load average (1 min): {os.getloadavg()[0]:.2f}; configs: {args.configs}")
    for name, values in samples.items():
        print(
            f"{name:28s} n={len(values):4d} median {statistics.median(values) * 1000:8.2f} ms"
            f"  min {min(values) * 1000:8.2f} ms  max {max(values) * 1000:8.2f} ms"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
