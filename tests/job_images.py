"""The job test image: the default base image plus cloudpickle and the data science stack.

Built once from a wheelhouse made on the host (no network in the build), tagged by a
hash of the wheel names, and reused across runs.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

from wheelhouse import JOB_WHEELS as WHEELHOUSE

PACKAGES = ["cloudpickle", "numpy", "pandas", "scikit-learn", "xgboost-cpu", "matplotlib"]
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"]


def download_job_wheels(folder: Path) -> None:
    """The wheels for the image's Python (3.11, Debian bookworm): by the set-up only
    (``python tests/wheelhouse.py``), never from a test."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    pip = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    target = ["--python-version", "3.11", *platforms, "-d", str(folder)]
    subprocess.run([*pip, *target, *PACKAGES], check=True)


def wheelhouse() -> Path:
    """The wheels the set-up downloaded (the tests ask no package index)."""
    if not any(WHEELHOUSE.glob("xgboost*.whl")):
        from conftest import need

        need(f"no job wheels in {WHEELHOUSE}: run .ci/setup --test (python tests/wheelhouse.py)")
    return WHEELHOUSE


def job_image(docker_client, base_image: str) -> str:
    """``dss-containers-test/jobs:<hash>``, built FROM the base image when missing."""
    import docker.errors

    wheels = sorted(p.name for p in wheelhouse().glob("*.whl"))
    digest = hashlib.sha256("\n".join([base_image, *wheels]).encode()).hexdigest()[:12]
    tag = f"dss-containers-test/jobs:{digest}"
    try:
        docker_client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    dockerfile = (
        f"FROM {base_image}\nUSER root\nCOPY wheels /wheels\n"
        "RUN /opt/dss/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels "
        + " ".join(PACKAGES)
        + " && rm -rf /wheels\nUSER 1000:100\n"
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        tar.add(str(WHEELHOUSE), arcname="wheels")
    context.seek(0)
    docker_client.images.build(
        fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True
    )
    return tag
