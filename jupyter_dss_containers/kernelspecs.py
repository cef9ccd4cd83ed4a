"""Kernel picker entries derived from the config file: one per permitted (config x code env).

The server shows them live (:class:`ContainerKernelSpecManager`, no install step);
``jupyter dss-containers kernelspecs install`` writes the same specs to disk for plain
jupyter_client users (nbclient, papermill, ``jupyter console``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from traitlets import Unicode

from .config import ConfigFile, ExecutionConfig, load_config, parse_config
from .permissions import (
    Identity,
    PermissionDenied,
    check_permission,
    check_shared_part,
    current_identity,
    permitted_configs,
    serving_identity,
)

PREFIX = "dss-"
PROVISIONER_NAME = "dss-containers"
PYTHON_ARGV = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
R_ARGV = ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]


def resource_dir() -> str:
    return str(resources.files("jupyter_dss_containers").joinpath("resources"))


def spec_name(config: str, code_env: str | None = None, language: str = "python") -> str:
    name = f"{PREFIX}{config}" + (f"-{code_env}" if code_env else "")
    return name + ("-r" if language == "r" else "")


def _spec(
    config: ExecutionConfig,
    code_env: str | None,
    language: str,
    config_path: str | None,
    curve: bool = False,
) -> dict[str, Any]:
    where = f"{config.name}, {code_env}" if code_env else config.name
    provisioner_config: dict[str, Any] = {"execution_config": config.name, "code_env": code_env}
    if config_path:
        provisioner_config["config_file"] = config_path
    return {
        "argv": R_ARGV if language == "r" else PYTHON_ARGV,
        "display_name": f"R ({where})" if language == "r" else f"Python 3 ({where})",
        "language": "R" if language == "r" else "python",
        "interrupt_mode": config.interrupt_mode,
        "env": {},
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": PROVISIONER_NAME,
                "config": provisioner_config,
            },
            "dss_containers": {
                "execution_config": config.name,
                "code_env": code_env,
                "backend": config.backend,
                "description": config.description,
            },
            "debugger": False,
            # our base images pin an ipykernel that takes CurveZMQ keys from the
            # connection file; an arbitrary image reference may not
            **({"supported_encryption": ["curve"]} if curve else {}),
        },
    }


def container_kernel_specs(
    config_file: ConfigFile, identity: Identity | None, config_path: str | None = None
) -> dict[str, dict[str, Any]]:
    """Kernel spec dicts (kernel.json contents) by name, for the configs ``identity`` may use
    (all configs when ``identity`` is None)."""
    specs: dict[str, dict[str, Any]] = {}
    configs = (
        config_file.execution_configs.values()
        if identity is None
        else permitted_configs(identity, config_file)
    )
    for config in configs:
        base = config_file.base_image_of(config)
        languages = ["python"] + (["r"] if base is not None and base.with_r else [])
        for env in [None, *(e.name for e in config_file.envs_for(config.name))]:
            for language in languages:
                curve = base is not None and language == "python"
                specs[spec_name(config.name, env, language)] = _spec(
                    config, env, language, config_path, curve
                )
    return specs


class ContainerKernelSpecManager(KernelSpecManager):
    """The installed kernel specs plus the container ones, live from the config file."""

    dss_config_file = Unicode(
        None, allow_none=True, config=True, help="Config file path (default: the usual search)."
    )

    def _load(self) -> ConfigFile | None:
        try:
            return load_config(self.dss_config_file)
        except Exception as exc:  # a broken file must not hide the local kernels
            self.log.error("dss-containers: no container kernels: %s", exc)
            return None

    def _container_specs(self) -> dict[str, dict[str, Any]]:
        config_file = self._load()
        if config_file is None:
            return {}
        return container_kernel_specs(
            config_file, current_identity(config_file), self.dss_config_file
        )

    def _host_kernels_refusal(self) -> PermissionDenied | None:
        """Why the requesting user may not use host kernels (kernel specs that are not ours:
        they run on the server itself); None when they may, or no multi-user request is
        being served. A broken config file opens host kernels to nobody."""
        config_file = self._load() or parse_config({}, "<no usable config file>")
        identity = serving_identity(config_file)
        if identity is None:
            return None
        try:
            check_shared_part(identity, config_file.host_kernels)
        except PermissionDenied as exc:
            return exc
        return None

    def find_kernel_specs(self) -> dict[str, str]:
        found = super().find_kernel_specs()
        if self._host_kernels_refusal() is not None:
            found = {n: d for n, d in found.items() if is_container_spec(self._on_disk(n))}
        found.update(dict.fromkeys(self._container_specs(), resource_dir()))
        return found

    def _on_disk(self, kernel_name: str) -> KernelSpec | None:
        try:
            return super().get_kernel_spec(kernel_name)
        except Exception:  # unreadable: not offered either
            return None

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        spec = self._container_specs().get(kernel_name)
        if spec is not None:
            return KernelSpec(resource_dir=resource_dir(), **spec)
        if kernel_name.startswith(PREFIX) and kernel_name not in super().find_kernel_specs():
            self._refuse_if_forbidden(kernel_name)
            raise NoSuchKernel(kernel_name)
        found = super().get_kernel_spec(kernel_name)
        if not is_container_spec(found):
            refusal = self._host_kernels_refusal()
            if refusal is not None:
                raise PermissionDenied(f"kernel {kernel_name!r}: {refusal}")
        return found

    def _refuse_if_forbidden(self, kernel_name: str) -> None:
        """Say *why* a container kernel is not offered when its config exists but is closed."""
        config_file = self._load()
        if config_file is None:
            return
        spec = container_kernel_specs(config_file, None).get(kernel_name)
        if spec is not None:
            name = spec["metadata"]["dss_containers"]["execution_config"]
            check_permission(current_identity(config_file), config_file.get(name))

    def get_all_specs(self) -> dict[str, dict[str, Any]]:
        out = super().get_all_specs()
        if out and self._host_kernels_refusal() is not None:
            out = {n: s for n, s in out.items() if is_container_spec(s.get("spec"))}
        for name, spec in self._container_specs().items():
            out[name] = {"resource_dir": resource_dir(), "spec": spec}
        return out


def is_container_spec(spec: KernelSpec | dict[str, Any] | None) -> bool:
    """True for a kernel spec (object or kernel.json dict) run by our provisioner."""
    metadata = spec.get("metadata") if isinstance(spec, dict) else getattr(spec, "metadata", None)
    provisioner = (metadata or {}).get("kernel_provisioner") or {}
    return isinstance(provisioner, dict) and provisioner.get("provisioner_name") == PROVISIONER_NAME


def install_kernel_specs(
    config_file: ConfigFile,
    identity: Identity,
    *,
    user: bool = True,
    prefix: str | None = None,
    config_path: str | None = None,
) -> list[str]:
    """Write the container kernel specs to a kernels folder; return the paths written."""
    manager = KernelSpecManager()
    written = []
    for name, spec in container_kernel_specs(config_file, identity, config_path).items():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            shutil.copytree(resource_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
            (folder / "kernel.json").write_text(json.dumps(spec, indent=2))
            written.append(manager.install_kernel_spec(str(folder), name, user=user, prefix=prefix))
    return written
