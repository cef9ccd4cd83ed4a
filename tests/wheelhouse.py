"""The wheels the tests install, downloaded once by the set-up: the tests ask no package index.

``.ci/setup --test`` runs ``python tests/wheelhouse.py``: one ``pip download`` (the
project's own command, for the base images' Python and glibc) per requirement set into
``ENV_WHEELS``, and the job test image's wheels into ``JOB_WHEELS``. The test session then
runs every pip with ``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS=ENV_WHEELS`` (``conftest.py``):
a code env, a mirror or a base image whose wheels are not cached is built from these, and
a package the wheelhouse lacks fails at once (as ``ghost`` must) instead of asking PyPI.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(os.environ.get("DSS_TEST_WHEELS") or Path.home() / ".cache" / "dss-containers-tests")
ENV_WHEELS = ROOT / "env-wheels"
JOB_WHEELS = ROOT / "job-wheels"
#: what the tests' code envs, mirrors and base images install (one pip run per set: the
#: six versions conflict with each other)
ENV_SETS = (
    ["ipykernel==7.4.0"],  # the kernel pin of every image (images.wheels.KERNEL_PINS)
    ["scikit-learn==1.5.2"],  # test_code_envs: sk
    ["six==1.15.0"],
    ["six==1.16.0"],
    ["six==1.17.0"],  # test_code_envs: tiny, other, never; test_mirror: plain
    ["numpy==2.3.5", "pandas==2.3.3"],  # test_mirror: the mirrored pins and their deps
    ["nvidia-cuda-runtime-cu12==12.9.79"],  # test_cuda_images: CUDA 12.9, runtime only
    ["tensorboard==2.21.0"],  # test_browser_proxy: %tensorboard through the proxy route
)
PYTHON, GLIBC = "3.11", "2.36"  # Debian bookworm, the base images' suite


def offline_env() -> dict[str, str]:
    """pip's settings for the test session: no index, this wheelhouse only."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(ENV_WHEELS)}


def download() -> None:
    """Fill both folders (asks the index: for the set-up only, never from a test); a second
    run with the same sets does nothing."""
    from job_images import download_job_wheels

    from jupyter_dss_containers.images.wheels import pip_download_command

    done = ENV_WHEELS / f".complete-{_key()}"
    if not done.exists():
        ENV_WHEELS.mkdir(parents=True, exist_ok=True)
        for requirements in ENV_SETS:
            cmd = pip_download_command(
                requirements, ENV_WHEELS, PYTHON, GLIBC, platform.machine(), ("-q",)
            )
            subprocess.run(cmd, check=True)
        done.touch()
    if not any(JOB_WHEELS.glob("xgboost*.whl")):
        download_job_wheels(JOB_WHEELS)
    print(
        f"test wheels in {ROOT}: {len(list(ENV_WHEELS.glob('*.whl')))} for code envs, "
        f"{len(list(JOB_WHEELS.glob('*.whl')))} for the job image"
    )


def _key() -> str:
    import hashlib

    return hashlib.sha256(repr((ENV_SETS, PYTHON, GLIBC)).encode()).hexdigest()[:12]


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here.parent)]
    download()
