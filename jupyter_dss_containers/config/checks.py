"""What the schema cannot say: names that must refer to other entries, and settings that
only make sense together."""

from __future__ import annotations

import re
from typing import Any

from ..workspace import template_problem
from .cuda import cuda_problems
from .hostchecks import docker_hosts_problems
from .model import daemon_reach
from .units import SIZE_RANGE, size_in_range


def cross_check(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What a schema cannot say: names that must refer to other entries."""
    problems = []
    base_images = data.get("base_images", {})
    configs = data.get("execution_configs", {})
    for name, cfg in configs.items():
        image = cfg["image"]
        if image not in base_images and not re.search(r"[:/@]", image):
            defined = ", ".join(sorted(base_images)) or "none"
            problems.append(
                (
                    f"execution_configs.{name}.image",
                    f"{image!r} is neither a base image (defined: {defined}) "
                    "nor an image reference with a tag or registry (e.g. python:3.12-slim)",
                )
            )
        if cfg.get("read_only_root"):  # /tmp is then the config's own writable scratch
            for i, mount in enumerate(cfg.get("docker", {}).get("mounts", [])):
                if mount.get("target", "").rstrip("/") == "/tmp":
                    problems.append(
                        (
                            f"execution_configs.{name}.docker.mounts[{i}].target",
                            "expected a folder other than /tmp, the writable scratch of "
                            f"read_only_root (e.g. /data), got {mount['target']!r}",
                        )
                    )
        problems += _transport_problems(name, cfg)
        problems += docker_hosts_problems(name, cfg)
        resources_ = cfg.get("docker", {}).get("resources", {})
        for key in ("memory", "shm_size"):
            if key not in resources_:
                continue
            if not size_in_range(resources_[key]):
                problems.append(
                    (
                        f"execution_configs.{name}.docker.resources.{key}",
                        f"expected {SIZE_RANGE}, got {resources_[key]!r}",
                    )
                )
    problems += cuda_problems(base_images)
    for env_name, env in data.get("code_envs", {}).items():
        if env.get("exclude") and env.get("mirror") in (None, False):
            problems.append(
                (
                    f"code_envs.{env_name}.exclude",
                    "expected only with mirror (true, or a requirements file): "
                    "it names packages a mirror leaves out",
                )
            )
        available = env.get("available_for", "all")
        for i, config_name in enumerate([] if available == "all" else available):
            if config_name not in configs:
                problems.append(
                    (
                        f"code_envs.{env_name}.available_for[{i}]",
                        f"no execution configuration named {config_name!r} "
                        f"(defined: {', '.join(sorted(configs)) or 'none'})",
                    )
                )
    template = data.get("defaults", {}).get("user_root")
    if template is not None and template_problem(template):
        problems.append(("defaults.user_root", f"{template_problem(template)}, got {template!r}"))
    default_memory = data.get("defaults", {}).get("resources", {}).get("memory")
    if default_memory is not None and not size_in_range(default_memory):
        problems.append(
            (
                "defaults.resources.memory",
                f"expected {SIZE_RANGE}, got {default_memory!r}",
            )
        )
    for name, cfg in configs.items():
        pool = cfg.get("warm_pool", {})
        pooled = pool.get("size", 0) > 0 or pool.get("jobs", 0) > 0
        mount = cfg.get("workspace", {}).get("mount", "auto") if "workspace" in cfg else "none"
        if pooled and mount != "none":
            problems.append(
                (
                    f"execution_configs.{name}.workspace.mount",
                    "expected none with a warm_pool: pooled kernels and job runners start "
                    "before anyone asks for them, so they cannot mount a user's workspace",
                )
            )
    default = data.get("defaults", {}).get("execution_config")
    if default and default not in configs:
        problems.append(
            ("defaults.execution_config", f"no execution configuration named {default!r}")
        )
    return problems


def _transport_problems(name: str, cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """ipc sockets need a daemon on this host; a TCP kernel needs a network to be reached."""
    transport = cfg.get("transport", "auto")
    docker = cfg.get("docker", {})
    host = docker.get("host", "")
    # ipc needs a Unix socket daemon; anywhere else ``auto`` means tcp (see transport.resolve)
    remote = cfg["backend"] != "docker" or daemon_reach(host) != "unix"
    where = f"execution_configs.{name}.transport"
    if transport == "ipc" and remote:
        on = "Kubernetes" if cfg["backend"] != "docker" else f"the daemon at {host}"
        return [
            (
                where,
                f"expected 'tcp' or 'auto': ipc sockets need a Docker or Podman daemon on "
                f"this host (a unix:// socket), and this config runs on {on}",
            )
        ]
    if docker.get("network") == "none" and (transport == "tcp" or remote):
        return [
            (
                where,
                "expected 'ipc' or 'auto' on a local daemon: with docker.network 'none' "
                "a kernel on tcp cannot be reached",
            )
        ]
    return []
