"""gateway_provisioners' DockerProvisioner as a kernel-start variant, on our own base image.

The comparison is only fair on the same image, so this module builds a kernel image FROM our
``default`` base image with gateway_provisioners' bootstrap script and Python kernel launcher
(copied from the installed package, as its ``jupyter-image-bootstrap install`` would) and
pycryptodomex (from a wheelhouse, the build has no network), installs the kernel spec with
``jupyter-docker-spec install`` into a temporary folder (never the user's kernels), and runs
it through an ``AsyncKernelManager`` like any other variant.

Its launcher sends the connection info back to a response socket on the host and the client
then talks to the container's bridge address: a benchmark-only exception to the loopback rule
of the project (tests never do this).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import ipaddress
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from string import Template
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

GATEWAY_KERNEL = "gateway-docker"
IMAGE_REPO = "dss-containers-bench/gateway-kernel"
KERNEL_USER = "bench"  # gateway_provisioners refuses KERNEL_USERNAME=root by default
LABEL = "dss-containers.jupyter.org/benchmark"
WHEELHOUSE = Path.home() / ".cache" / "dss-containers-bench" / "wheels"
PIP_PLATFORM = (  # the base image's Python: Debian 12's 3.11 on glibc 2.36
    "--quiet",
    "--only-binary=:all:",
    "--python-version=3.11",
    "--platform=manylinux_2_17_x86_64",
    "--platform=manylinux2014_x86_64",
)
BOOTSTRAP_DIR = "/usr/local/bin"  # fixed by gateway_provisioners (BOOTSTRAP_DIR)

DOCKERFILE = """\
FROM {base}
USER root
COPY wheels /tmp/wheels
RUN pip install --no-index --no-cache-dir --find-links /tmp/wheels pycryptodomex \\
 && rm -rf /tmp/wheels
COPY kernel-launchers {bootstrap_dir}/kernel-launchers
COPY bootstrap-kernel.sh {bootstrap_dir}/bootstrap-kernel.sh
RUN chmod 0755 {bootstrap_dir}/bootstrap-kernel.sh
ENV KERNEL_LANGUAGE=python
USER {user}
CMD ["{bootstrap_dir}/bootstrap-kernel.sh"]
"""


def available() -> str | None:
    """None when gateway_provisioners can be used, else why not (printed as a note)."""
    if importlib.util.find_spec("gateway_provisioners") is None:
        return "gateway_provisioners is not installed (pip install -e '.[bench]')"
    try:
        import gateway_provisioners  # noqa: F401
    except Exception as exc:
        return f"gateway_provisioners does not import: {exc!r}"
    return None


def base_image() -> str:
    """The content tag of our base image ``default``, from the embedded default config."""
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    previous = os.environ.pop("DSS_CONTAINERS_CONFIG", None)
    try:
        return images.base_image_tag(load_config(None).base_images["default"])
    finally:
        if previous is not None:
            os.environ["DSS_CONTAINERS_CONFIG"] = previous


def bridge_gateway(client: Any) -> str:
    """The docker bridge's gateway address: the host as the containers see it.

    The default bridge often lists only its subnet; its gateway is then the subnet's first
    host address (docker0's own address).
    """
    ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    if ipam.get("Gateway"):
        return ipam["Gateway"]
    return str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))


# --------------------------------------------------------------------------- image


def _package_dir() -> Path:
    import gateway_provisioners

    return Path(gateway_provisioners.__file__).parent


def ensure_wheelhouse(folder: Path = WHEELHOUSE) -> Path:
    """pycryptodomex for the image's Python (3.11, manylinux), downloaded once on the host."""
    if not any(folder.glob("pycryptodomex-*.whl")):
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                *PIP_PLATFORM,
                "-d",
                str(folder),
                "pycryptodomex",
            ],
            check=True,
        )
    return folder


def build_context(base: str, user: str, wheels: Path) -> bytes:
    """The tar build context: Dockerfile, wheels, launchers and the finalized bootstrap.

    Laid out as ``jupyter-image-bootstrap install --languages python`` lays them out in
    an image (the python launcher plus the shared server listener over its placeholder).
    """
    launchers = _package_dir() / "kernel-launchers"
    bootstrap = (launchers / "bootstrap" / "bootstrap-kernel.sh").read_text()
    files: dict[str, bytes] = {
        "Dockerfile": DOCKERFILE.format(base=base, user=user, bootstrap_dir=BOOTSTRAP_DIR).encode(),
        "bootstrap-kernel.sh": Template(bootstrap)
        .safe_substitute(install_dir=BOOTSTRAP_DIR)
        .encode(),
    }
    for sub in ("python", "shared"):  # shared last: it replaces the placeholder listener
        for path in sorted((launchers / sub).rglob("*.py")):
            files[f"kernel-launchers/python/{path.relative_to(launchers / sub)}"] = (
                path.read_bytes()
            )
    for wheel in sorted(wheels.glob("*.whl")):
        files[f"wheels/{wheel.name}"] = wheel.read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ensure_image(client: Any, log: Any = print) -> str:
    """The gateway kernel image for our current base image, built when missing."""
    base = base_image()
    user = client.images.get(base).attrs["Config"].get("User") or "1000:100"
    digest = hashlib.sha256(f"{base}|{version('gateway_provisioners')}".encode()).hexdigest()
    tag = f"{IMAGE_REPO}:{digest[:12]}"
    with contextlib.suppress(Exception):
        client.images.get(tag)
        return tag
    log(f"building {tag} FROM {base} (gateway_provisioners {version('gateway_provisioners')})")
    context = build_context(base, user, ensure_wheelhouse())
    output = client.api.build(
        fileobj=io.BytesIO(context),
        custom_context=True,
        tag=tag,
        network_mode="none",
        rm=True,
        forcerm=True,
        labels={LABEL: "gateway"},
        decode=True,
    )
    for chunk in output:
        if "error" in chunk:
            raise RuntimeError(f"building {tag} failed: {chunk['error'].strip()}")
    return tag


# --------------------------------------------------------------------------- kernel spec


def install_spec(image: str, folder: Path) -> Path:
    """``jupyter-docker-spec install`` into ``folder`` (a prefix), never the user's kernels."""
    subprocess.run(
        [
            shutil.which("jupyter-docker-spec") or "jupyter-docker-spec",
            "install",
            f"--image-name={image}",
            f"--kernel-name={GATEWAY_KERNEL}",
            f"--prefix={folder}",
            "--replace",
        ],
        check=True,
        capture_output=True,
    )
    return folder / "share" / "jupyter" / "kernels"


def spec_manager_for(kernels_dir: Path) -> Any:
    """A factory of KernelSpecManagers that only see the temporary kernels folder."""
    return lambda: KernelSpecManager(kernel_dirs=[str(kernels_dir)])


def kernel_env(gateway_ip: str) -> dict[str, str]:
    """The env of a gateway kernel start: the launcher's needs, not the whole host env.

    gateway_provisioners' docker launcher copies its whole environment into the container,
    so only what it needs is passed (PATH for ``python``, the docker endpoint, the user).
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "KERNEL_USERNAME": KERNEL_USER,
        "GP_RESPONSE_IP": gateway_ip,
    }
    for name in ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "PYTHONPATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@dataclass
class GatewaySetup:
    """Everything a gateway variant needs, prepared once before the timed runs."""

    image: str
    kernels_dir: Path
    gateway_ip: str
    kernel_ids: set[str] = field(default_factory=set)


def prepare(folder: Path, log: Any = print) -> GatewaySetup:
    """Image, kernel spec and response address; the response IP is read at import time.

    gateway_provisioners' response manager binds ``GP_RESPONSE_IP`` when its module is
    first imported (by the first kernel start), so it is set here, before that import.
    """
    import docker

    client = docker.from_env()
    gateway_ip = bridge_gateway(client)
    os.environ["GP_RESPONSE_IP"] = gateway_ip
    image = ensure_image(client, log)
    return GatewaySetup(image, install_spec(image, folder), gateway_ip)


def remove_containers(kernel_ids: set[str]) -> list[str]:
    """Force-remove gateway kernel containers of this run (labelled by kernel id)."""
    import docker

    api = docker.from_env().api
    removed = []
    for kernel_id in kernel_ids:
        for row in api.containers(all=True, filters={"label": f"kernel_id={kernel_id}"}):
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(row["Id"], force=True, v=True)
            removed.append((row.get("Names") or [row["Id"][:12]])[0].lstrip("/"))
    return removed
