"""Prove a container kernel on an offline-built CUDA image computes on the GPU.

    python benchmarks/gpu_check.py [--cuda 12.9] [--libraries runtime,nvrtc,cublas]
                                   [--with auto|none|cupy|torch] [--dry-run] [--keep]

For a machine with an NVIDIA GPU, its driver, Docker and the NVIDIA container toolkit (see
the README's "GPUs and CUDA images"). It builds a ``bootstrap: debian`` base image with
``with_cuda: true`` (CUDA from NVIDIA's PyPI wheels, no ``nvidia/cuda`` pull), optionally
with CuPy or PyTorch from PyPI (``--with auto`` takes CuPy when its wheel can be
downloaded), starts a ``dss-gpu-check`` kernel through jupyter_client and the
``dss-containers`` provisioner, and runs in it: ``cudaGetDeviceCount`` through ``ctypes``,
a CuPy matrix product checked against NumPy, or ``torch.cuda.is_available()`` and a product
on the device. It prints one ``PASS`` or ``FAIL`` line and exits 0 or 1 (2: it could not
run). ``--dry-run`` (any machine) runs the same kernel with no GPU asked for and expects
``cudaGetDeviceCount`` to fail: it checks the script, the build and the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

CUPY = "cupy-cuda12x==13.6.0"
#: PyTorch's PyPI wheel of this version is built for CUDA 12.8 and pins that set's wheels
TORCH = "torch==2.8.0"
TORCH_CUDA = "12.8"
NAME = "gpu-check"

#: run in the kernel: one JSON line after the marker
KERNEL_CODE = r"""
import ctypes, json, shutil, subprocess
lib = ctypes.CDLL("libcudart.so.12")
count, version = ctypes.c_int(-1), ctypes.c_int(0)
result = {"count_rc": lib.cudaGetDeviceCount(ctypes.byref(count)), "count": count.value}
lib.cudaRuntimeGetVersion(ctypes.byref(version))
result["runtime"] = version.value
if shutil.which("nvidia-smi"):
    result["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                          text=True).stdout.strip()
try:
    import cupy, numpy
except ImportError:
    pass
else:
    result["cupy"] = cupy.__version__
    try:
        rng = numpy.random.default_rng(0)
        a = rng.random((1024, 1024), dtype=numpy.float32)
        b = rng.random((1024, 1024), dtype=numpy.float32)
        c = cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b))
        result["cupy_max_error"] = float(numpy.abs(c - a @ b).max() / numpy.abs(a @ b).max())
    except Exception as exc:
        result["cupy_error"] = f"{type(exc).__name__}: {exc}"
try:
    import torch
except ImportError:
    pass
else:
    result["torch"] = torch.__version__
    try:
        result["torch_cuda"] = torch.cuda.is_available()
        if result["torch_cuda"]:
            x = torch.ones(1024, 1024, device="cuda")
            result["torch_device"] = torch.cuda.get_device_name(0)
            result["torch_product"] = float((x @ x)[0, 0])
    except Exception as exc:
        result["torch_error"] = f"{type(exc).__name__}: {exc}"
print("GPU_CHECK " + json.dumps(result))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuda", help="cuda_version (default: the table's default; torch: 12.8)")
    parser.add_argument("--libraries", help="cuda_libraries, comma-separated, or 'all'")
    parser.add_argument(
        "--with", dest="framework", default="auto", choices=["auto", "none", "cupy", "torch"]
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="ask for no GPU; expect cudaGetDeviceCount to fail (no GPU needed)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the config folder")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for the kernel")
    return parser.parse_args(argv)


def can_download(requirement: str) -> bool:
    """Whether the host's pip reaches a package index with this wheel (for ``--with auto``)."""
    from jupyter_dss_containers.images.wheels import SUITES, pip_download_command

    python, glibc = SUITES["bookworm"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = pip_download_command(
            [requirement], Path(tmp), python, glibc, platform.machine(), ("--no-deps", "-q")
        )
        return subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0


def base_image(args: argparse.Namespace) -> dict[str, Any]:
    """The ``base_images`` entry to build."""
    framework = args.framework
    if framework == "auto":
        framework = "cupy" if can_download(CUPY) else "none"
        print(
            f"--with auto: {framework} ({CUPY} {'is' if framework == 'cupy' else 'is not'} "
            "downloadable here)"
        )
    args.framework = framework
    entry: dict[str, Any] = {"bootstrap": "debian", "with_cuda": True}
    if args.cuda or framework == "torch":
        entry["cuda_version"] = args.cuda or TORCH_CUDA
    if args.libraries:
        libraries = args.libraries.split(",")
        entry["cuda_libraries"] = "all" if libraries == ["all"] else libraries
    elif framework == "torch":
        entry["cuda_libraries"] = ["runtime"]  # torch's own pins bring the rest
    if framework == "cupy":
        entry["python_packages"] = [CUPY]
    elif framework == "torch":
        entry["python_packages"] = [TORCH]
    return entry


def build(config_file: Any) -> str:
    import docker

    from jupyter_dss_containers import images
    from jupyter_dss_containers.cli_progress import ConsoleProgress

    client = docker.from_env(timeout=600)
    spec = config_file.base_images[NAME]
    started = time.monotonic()
    with ConsoleProgress() as progress:
        tag = images.build_base_image(spec, client, progress=progress)
    size = client.images.get(tag).attrs["Size"]
    print(f"image {tag}: {size / 1024**2:.1f} MiB, ready in {time.monotonic() - started:.0f} s")
    return tag


async def run_kernel(config_path: Path, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """Start the ``dss-gpu-check`` kernel, run :data:`KERNEL_CODE`; its result and output."""
    from jupyter_client import AsyncKernelManager

    from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager

    ksm = ContainerKernelSpecManager(dss_config_file=str(config_path))
    km = AsyncKernelManager(kernel_name=f"dss-{NAME}", kernel_spec_manager=ksm)
    output: list[str] = []

    def keep(msg: dict[str, Any]) -> None:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            output.append(content["text"])
        elif msg["msg_type"] == "error":
            output.append("\n".join(content["traceback"]))

    started = time.monotonic()
    await asyncio.wait_for(km.start_kernel(), timeout)
    try:
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=timeout)
        print(f"kernel ready in {time.monotonic() - started:.1f} s")
        await kc.execute_interactive(KERNEL_CODE, timeout=timeout, output_hook=keep)
        kc.stop_channels()
    finally:
        await km.shutdown_kernel(now=True)
    text = "".join(output)
    for line in text.splitlines():
        if line.startswith("GPU_CHECK "):
            return json.loads(line[len("GPU_CHECK ") :]), text
    return None, text


def verdict(result: dict[str, Any], framework: str, dry_run: bool) -> tuple[bool, str]:
    """PASS or FAIL, and why, from the kernel's result."""
    facts = json.dumps(result)
    if dry_run:  # no GPU: the runtime loads, the frameworks import, the device calls fail
        imported = framework == "none" or framework in result
        ok = result["count_rc"] != 0 and result["runtime"] > 0 and imported
        return ok, f"dry run: libcudart {result['runtime']} loaded, no GPU asked for: {facts}"
    if result["count_rc"] != 0 or result["count"] < 1:
        return False, f"cudaGetDeviceCount in the kernel: rc={result['count_rc']}: {facts}"
    if framework == "cupy" and not result.get("cupy_max_error", 1) < 1e-3:
        return False, f"CuPy matrix product wrong or missing: {facts}"
    if framework == "torch" and not result.get("torch_cuda"):
        return False, f"torch.cuda.is_available() is False: {facts}"
    return True, f"{result['count']} GPU(s) in the kernel: {facts}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    folder = Path(tempfile.mkdtemp(prefix="dss-gpu-check-"))
    entry = base_image(args)
    config = {
        "base_images": {NAME: entry},
        "execution_configs": {
            NAME: {
                "backend": "docker",
                "image": NAME,
                "description": "gpu_check.py",
                "workspace": {"mount": "none"},
                "permissions": {"groups": ["*"]},
            }
        },
    }
    path = folder / "dss_containers.yaml"
    path.write_text(yaml.safe_dump(config))
    print(f"config {path}:\n{path.read_text()}")
    try:
        tag = build(load_config(str(path)))
        if args.dry_run:  # an image reference, not the base image name: no GPU default
            config["execution_configs"][NAME]["image"] = tag
            path.write_text(yaml.safe_dump(config))
        result, text = asyncio.run(run_kernel(path, args.timeout))
    except images.ImageBuildError as exc:
        print(f"FAIL: the build: {exc}")
        return 1
    except Exception as exc:  # the daemon refusing the GPU request says so here
        print(f"FAIL: the kernel: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            folder.rmdir()
    if result is None:
        print(f"FAIL: the kernel printed no result:\n{text}")
        return 1
    ok, why = verdict(result, args.framework, args.dry_run)
    print(f"{'PASS' if ok else 'FAIL'}: {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
