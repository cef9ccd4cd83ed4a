"""One "where and with what" answer for a config, used by the CLI and the REST API alike.

No engine is needed: the summary reads the parsed config only.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess

from jupyter_dss_containers import summary
from jupyter_dss_containers.config import parse_config

CONFIGS = {
    "execution_configs": {
        "small": {
            "backend": "docker",
            "image": "default",
            "docker": {
                "host": "unix:///var/run/docker.sock",
                "resources": {"memory": "512m", "cpus": 1, "pids": 256},
            },
        },
        "gpu": {
            "backend": "docker",
            "image": "default",
            "docker": {
                "host": "tcp://10.0.0.5:2376",
                "runtime": "nvidia",
                "gpus": ["0", "1"],
                "resources": {"cpus": 4, "shm_size": "1g"},
            },
        },
        "k8s": {
            "backend": "kubernetes",
            "image": "default",
            "kubernetes": {
                "context": "prod",
                "namespace": "dss-${user}",
                "resources": {"requests": {"cpu": 1}, "limits": {"memory": "8Gi"}},
            },
        },
        "in-cluster": {
            "backend": "kubernetes",
            "image": "default",
            "kubernetes": {"in_cluster": True},
        },
    }
}


def test_placement_of_docker_and_kubernetes_configs():
    """Guards the facts the sidebar and ``configs`` show: the daemon or the user's own
    namespace (``${user}`` expanded, not the template), and every resource with its line."""
    config_file = parse_config(CONFIGS, "inline")
    small = summary.placement(config_file.get("small"), "alice")
    assert small.where == "unix:///var/run/docker.sock"
    assert small.resources == {
        "cpus": 1,
        "memory_bytes": 512 * 1024**2,
        "pids": 256,
        "summary": "1 CPU, 512 MiB",
    }
    gpu = summary.placement(config_file.get("gpu"), "alice")
    assert gpu.where == "tcp://10.0.0.5:2376"
    assert gpu.resources == {  # no memory or pids set: the defaults it runs with
        "cpus": 4,
        "memory_bytes": 4 * 1024**3,
        "pids": 1024,
        "gpus": ["0", "1"],
        "shm_size_bytes": 1024**3,
        "runtime": "nvidia",
        "summary": "4 CPUs, 4 GiB, GPUs ['0', '1']",
    }
    k8s = summary.placement(config_file.get("k8s"), "Bob.Smith")
    assert k8s.where == "kubernetes prod, namespace dss-bob-smith"
    assert k8s.resources == {
        "requests": {"cpu": "1"},
        "limits": {"memory": "8Gi"},
        "summary": "requests cpu 1; limits memory 8Gi",
    }
    assert k8s.summary == k8s.resources["summary"]
    inside = summary.placement(config_file.get("in-cluster"), "bob")
    assert inside.where == "kubernetes in-cluster, namespace default"
    assert inside.summary == "no requests or limits"


def test_cli_configs_show_the_same_placement(tmp_path):
    """Guards against the CLI re-deriving "where" on its own (it showed the raw
    ``dss-${user}`` template): its rows are the summary for the calling user."""
    path = tmp_path / "dss_containers.yaml"
    path.write_text(json.dumps(CONFIGS))
    env = {**os.environ, "DSS_CONTAINERS_CONFIG": str(path)}
    env.pop("JUPYTERHUB_USER", None)
    result = subprocess.run(
        ["jupyter", "dss-containers", "configs", "--json", "--all"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    config_file = parse_config(CONFIGS, "inline")
    user = getpass.getuser()
    for name, row in rows.items():
        expected = summary.placement(config_file.get(name), user)
        assert (row["where"], row["resources"]) == (expected.where, expected.summary)
    assert "${user}" not in rows["k8s"]["where"]
