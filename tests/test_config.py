"""The config file: where it is found, what it accepts, and one clear line per mistake."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from jupyter_dss_containers.config import (
    EMBEDDED,
    ConfigError,
    expand_user,
    format_size,
    load_config,
    parse_config,
    parse_size,
)
from jupyter_dss_containers.permissions import (
    Identity,
    PermissionDenied,
    check_permission,
    identity_for,
    permitted_configs,
)

GOOD = """
groups: {alice: [analysts], bob: [analysts, gpu-users]}
base_images:
  default: {bootstrap: debian}
  with-r: {bootstrap: debian, with_r: true}
code_envs:
  sk: {packages: [scikit-learn==1.5.2], available_for: [small]}
execution_configs:
  small:
    backend: docker
    image: default
    description: 1 CPU, 512 MiB
    docker: {host: "unix:///var/run/docker.sock", resources: {memory: 512m, cpus: 1}}
    permissions: {groups: [analysts]}
  gpu:
    backend: docker
    image: default
    docker: {runtime: nvidia, gpus: all, resources: {shm_size: 1g}}
    permissions: {groups: [gpu-users]}
  k8s-gpu:
    backend: kubernetes
    image: default
    registry: registry.example.com/team
    kubernetes:
      context: prod
      namespace: "dss-${user}"
      resources: {requests: {cpu: "1", memory: 2Gi}, limits: {memory: 8Gi, nvidia.com/gpu: "1"}}
    permissions: {groups: [gpu-users]}
"""


def write(tmp_path, text: str):
    path = tmp_path / "dss_containers.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    return lines


def test_design_example_loads(tmp_path):
    config_file = load_config(write(tmp_path, GOOD))
    small = config_file.get("small")
    assert small.docker.memory == 512 * 1024**2
    assert small.docker.cpus == 1
    gpu = config_file.get("gpu")
    assert gpu.docker.runtime == "nvidia" and gpu.docker.gpus == "all"
    assert [e.name for e in config_file.envs_for("small")] == ["sk"]
    assert config_file.envs_for("gpu") == []
    assert config_file.get("k8s-gpu").kubernetes.namespace_template == "dss-${user}"


def test_embedded_default_when_no_file(monkeypatch):
    monkeypatch.delenv("DSS_CONTAINERS_CONFIG", raising=False)
    config_file = load_config()
    assert config_file.source == EMBEDDED
    local = config_file.get("local")
    assert local.backend == "docker" and local.image == "default" and local.groups == ("*",)
    assert config_file.base_images["default"].bootstrap == "debian"


def test_search_order(tmp_path, monkeypatch):
    env_file = write(tmp_path, GOOD)
    monkeypatch.setenv("DSS_CONTAINERS_CONFIG", str(env_file))
    assert load_config().source == str(env_file)
    explicit = tmp_path / "other.yaml"
    explicit.write_text("execution_configs: {}\n")
    assert load_config(explicit).source == str(explicit)
    monkeypatch.delenv("DSS_CONTAINERS_CONFIG")
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir()
    (config_dir / "dss_containers.yaml").write_text(GOOD)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    assert load_config().source == str(config_dir / "dss_containers.yaml")


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        (  # unknown key
            "execution_configs: {a: {backend: docker, image: x:1, colour: red}}",
            "execution_configs.a",
            "unknown key 'colour'",
        ),
        (  # wrong type, deep inside
            "execution_configs: {gpu: {backend: docker, image: x:1, docker: {runtime: 3}}}",
            "execution_configs.gpu.docker.runtime",
            "expected string, got an integer (3)",
        ),
        (  # unknown backend
            "execution_configs: {a: {backend: podman-k8s, image: x:1}}",
            "execution_configs.a.backend",
            "expected one of 'docker', 'kubernetes', got 'podman-k8s'",
        ),
        (  # missing image
            "execution_configs: {a: {backend: docker}}",
            "execution_configs.a",
            "missing required key 'image'",
        ),
        (  # image that is neither a base image nor a reference
            "execution_configs: {a: {backend: docker, image: defualt}}",
            "execution_configs.a.image",
            "'defualt' is neither a base image",
        ),
        (  # bad size
            "execution_configs: {a: {backend: docker, image: x:1,"
            " docker: {resources: {memory: lots}}}}",
            "execution_configs.a.docker.resources.memory",
            "expected a size in bytes",
        ),
        (  # absurdly small memory
            "execution_configs: {a: {backend: docker, image: x:1,"
            " docker: {resources: {memory: 1k}}}}",
            "execution_configs.a.docker.resources.memory",
            "expected at least 6m",
        ),
        (  # bad daemon URL scheme
            "execution_configs: {a: {backend: docker, image: x:1, docker: {host: 'http://x'}}}",
            "execution_configs.a.docker.host",
            "expected matching",
        ),
        (  # docker section on a kubernetes config
            "execution_configs: {a: {backend: kubernetes, image: x:1, docker: {}}}",
            "execution_configs.a",
            "a 'docker' section does not belong",
        ),
        (  # bad name
            "execution_configs: {Bad/Name: {backend: docker, image: x:1}}",
            "execution_configs",
            "invalid name 'Bad/Name'",
        ),
        (  # env var name the backend would reject
            "execution_configs: {a: {backend: docker, image: x:1, env: {'A-B': '1'}}}",
            "execution_configs.a.env",
            "invalid name 'A-B'",
        ),
        (  # code env for an unknown config
            "execution_configs: {}\ncode_envs: {sk: {available_for: [nope]}}",
            "code_envs.sk.available_for[0]",
            "no execution configuration named 'nope'",
        ),
        (  # base image with both ways
            "base_images: {b: {bootstrap: debian, from: 'python:3.12-slim'}}",
            "base_images.b",
            "expected exactly one of 'from'",
        ),
        (  # top level not a mapping
            "- a\n- b\n",
            "",
            "expected a mapping at the top, got a list",
        ),
    ],
)
def test_bad_config_gives_one_clear_line(tmp_path, text, where, expected):
    lines = problems_of(tmp_path, text)
    assert len(lines) == 1, lines
    prefix = f"{tmp_path / 'dss_containers.yaml'}: {where}: " if where else ""
    assert lines[0].startswith(prefix), lines[0]
    assert expected in lines[0], lines[0]


def test_duplicate_names_are_refused_with_lines(tmp_path):
    lines = problems_of(
        tmp_path,
        """
        execution_configs:
          small: {backend: docker, image: x:1}
          small: {backend: docker, image: y:1}
        """,
    )
    assert lines == [
        f"{tmp_path / 'dss_containers.yaml'}: line 4, column 3: "
        "invalid YAML: duplicate key 'small' (first defined on line 3)"
    ]


def test_yaml_syntax_error_names_line(tmp_path):
    (line,) = problems_of(tmp_path, "execution_configs: [unclosed\n")
    assert "line 2" in line and "invalid YAML" in line


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: file not found"):
        load_config(tmp_path / "nowhere.yaml")


def test_several_problems_are_all_reported(tmp_path):
    lines = problems_of(
        tmp_path,
        """
        execution_configs:
          a: {backend: docker}
          b: {backend: dockr, image: x:1}
        """,
    )
    assert len(lines) == 2


def test_shipped_example_is_valid():
    from pathlib import Path

    example = Path(__file__).parent.parent / "examples" / "dss_containers.yaml"
    assert set(load_config(example).execution_configs) == {"local", "small", "gpu"}


def test_units():
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("256Mi") == 256 * 1024**2
    assert parse_size("1GiB") == 1024**3
    assert parse_size(1000) == 1000
    assert format_size(256 * 1024**2) == "256 MiB"
    assert format_size(1536 * 1024**2) == "1.5 GiB"
    assert expand_user("dss-${user}", "Alice.Smith@corp") == "dss-alice-smith-corp"


def test_permissions_single_check(tmp_path):
    config_file = load_config(write(tmp_path, GOOD))
    alice = identity_for("alice", config_file)
    bob = identity_for("bob", config_file)
    assert [c.name for c in permitted_configs(alice, config_file)] == ["small"]
    assert [c.name for c in permitted_configs(bob, config_file)] == ["small", "gpu", "k8s-gpu"]
    with pytest.raises(PermissionDenied) as caught:
        check_permission(alice, config_file.get("gpu"))
    assert str(caught.value) == (
        "user 'alice' may not use execution configuration 'gpu': "
        "it is open to groups gpu-users (alice is in analysts)"
    )
    hub = identity_for("alice", config_file, hub_groups=["gpu-users"])
    check_permission(hub, config_file.get("gpu"))  # JupyterHub's groups win over the file's
    check_permission(Identity("anyone"), load_config(None).get("local"))


def run_cli(*args: str, env_config: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DSS_CONTAINERS_CONFIG", None)
    if env_config:
        env["DSS_CONTAINERS_CONFIG"] = env_config
    return subprocess.run(
        ["jupyter", "dss-containers", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_validate_and_configs(tmp_path):
    good = write(tmp_path, GOOD)
    result = run_cli("validate", "--config", str(good))
    assert result.returncode == 0, result.stderr
    assert "valid (3 execution configurations)" in result.stdout

    result = run_cli("configs", "--json", "--all", env_config=str(good))
    assert result.returncode == 0, result.stderr
    assert '"name": "k8s-gpu"' in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("execution_configs: {gpu: {backend: docker, image: x:1, docker: {runtime: 3}}}")
    result = run_cli("validate", "--config", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{bad}: execution_configs.gpu.docker.runtime: expected string" in " ".join(
        result.stderr.split()
    )


@pytest.mark.parametrize(
    ("host", "reach"),
    [
        (None, "unix"),
        ("unix:///run/user/1000/podman/podman.sock", "unix"),
        ("npipe:////./pipe/docker_engine", "npipe"),
        ("tcp://10.0.0.1:2376", "network"),
        ("ssh://alice@build-host", "network"),
    ],
)
def test_one_function_says_where_a_daemon_is_for_the_checks_the_transport_and_the_backend(
    host, reach
):
    """Guards: the config cross-check, ``transport.resolve`` and ``DockerSettings.is_remote``
    drifting apart (each had its own prefix test: the check ``unix://``, ``is_remote`` also
    ``npipe://``): ipc is accepted exactly where ``auto`` means ipc (a named pipe is of
    this host but shares no Unix socket), and only a daemon on the network is remote."""
    from jupyter_dss_containers import transport
    from jupyter_dss_containers.config import daemon_reach

    assert daemon_reach(host) == reach
    docker = {"host": host} if host else {}

    def config(kind: str):
        return parse_config(
            {
                "execution_configs": {
                    "x": {
                        "backend": "docker",
                        "image": "default",
                        "transport": kind,
                        "docker": docker,
                    }
                }
            },
            "t.yaml",
        ).get("x")

    auto = config("auto")
    assert auto.docker.is_remote is (reach == "network")
    if host is None:
        return  # the runtime then asks $DOCKER_HOST: transport's answer is the machine's
    assert transport.resolve(auto) == ("ipc" if reach == "unix" else "tcp")
    if reach == "unix":
        assert config("ipc").transport == "ipc"
    else:
        with pytest.raises(ConfigError, match="ipc sockets need a Docker or Podman daemon"):
            config("ipc")
