"""What the schema cannot say about ``docker.hosts`` and GPU allocation: one address or a
list of them, names that tell the hosts apart, GPU ids that mean one thing."""

from __future__ import annotations

from typing import Any


def docker_hosts_problems(name: str, cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, what was expected) for each problem of a config's hosts and GPU settings."""
    docker = cfg.get("docker", {})
    where = f"execution_configs.{name}.docker"
    problems: list[tuple[str, str]] = []
    hosts = docker.get("hosts")
    if hosts is None:
        return problems
    if "host" in docker:
        problems.append(
            (f"{where}.host", "expected either host or hosts, not both: hosts lists every daemon")
        )
    names = [h.get("name") or f"host{i + 1}" for i, h in enumerate(hosts)]
    for i, host_name in enumerate(names):
        if names.index(host_name) != i:
            problems.append(
                (f"{where}.hosts[{i}].name", f"expected a name of its own, {host_name!r} is taken")
            )
    if isinstance(docker.get("gpus"), list):
        problems.append(
            (
                f"{where}.gpus",
                "expected a count or 'all' with hosts: device ids name the GPUs of one daemon",
            )
        )
    return problems
