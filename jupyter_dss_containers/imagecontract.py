"""What every image this package builds is, and what the backends may rely on.

One home for the facts shared by the builders and the workloads: the non-root user and its
home, the kernel's virtual environment, and the names and labels of our images. A leaf
(it imports only the label prefix), so the config model, the workspace planner and the
backends read it without loading the image workshop (:mod:`.images` re-exports it as
``images.contract``).
"""

from __future__ import annotations

from .ownership import PREFIX as LABEL_PREFIX

#: the user every image runs as (numeric, so that ``runAsNonRoot`` can check it)
IMAGE_UID, IMAGE_GID = 1000, 100
IMAGE_USER = f"{IMAGE_UID}:{IMAGE_GID}"
IMAGE_USER_NAME = "jovyan"
IMAGE_HOME = f"/home/{IMAGE_USER_NAME}"
#: the kernel's virtual environment (ipykernel and the image's Python packages)
VENV = "/opt/dss/venv"
KERNEL_PYTHON = f"{VENV}/bin/python"
IMAGE_PATH = f"{VENV}/bin:/usr/local/bin:/usr/bin:/bin"
#: the workload's private folders: a kernel's connection file and ipc sockets, and a job's
#: payload, runner and results (no workspace may be mounted over them)
KERNEL_FOLDER = "/tmp/.dss-kernel"
JOB_FOLDER = "/tmp/.dss-job"
#: their writable twins, where a workload whose private folder arrives read-only works: the
#: kernel's private copy of its connection file, an R job's outputs and error
KERNEL_RW_FOLDER = "/tmp/.dss-kernel-rw"
JOB_OUT_FOLDER = "/tmp/.dss-job-out"
#: every private folder of a workload: no workspace may be mounted over (or above) one
WORKLOAD_FOLDERS = (KERNEL_FOLDER, KERNEL_RW_FOLDER, JOB_FOLDER, JOB_OUT_FOLDER)

IMAGE_REPO_PREFIX = "dss-containers/"
ROOTFS_REPO = IMAGE_REPO_PREFIX + "rootfs"
ENV_REPO_PREFIX = IMAGE_REPO_PREFIX + "env-"

LABEL_BASE_IMAGE = LABEL_PREFIX + "base-image"
LABEL_CONTENT_HASH = LABEL_PREFIX + "content-hash"
LABEL_WITH_R = LABEL_PREFIX + "with-r"
LABEL_ROOTFS = LABEL_PREFIX + "rootfs"
LABEL_CODE_ENV = LABEL_PREFIX + "code-env"
LABEL_EXEC_CONFIG = LABEL_PREFIX + "execution-config"
LABEL_BASE_REF = LABEL_PREFIX + "base-ref"
#: a mirroring env's image: JSON list of what it could not mirror (see images.mirror)
LABEL_NOT_MIRRORED = LABEL_PREFIX + "not-mirrored"

__all__ = [
    "ENV_REPO_PREFIX",
    "IMAGE_GID",
    "IMAGE_HOME",
    "IMAGE_PATH",
    "IMAGE_REPO_PREFIX",
    "IMAGE_UID",
    "IMAGE_USER",
    "IMAGE_USER_NAME",
    "JOB_FOLDER",
    "JOB_OUT_FOLDER",
    "KERNEL_FOLDER",
    "KERNEL_PYTHON",
    "KERNEL_RW_FOLDER",
    "LABEL_BASE_IMAGE",
    "LABEL_BASE_REF",
    "LABEL_CODE_ENV",
    "LABEL_CONTENT_HASH",
    "LABEL_EXEC_CONFIG",
    "LABEL_NOT_MIRRORED",
    "LABEL_PREFIX",
    "LABEL_ROOTFS",
    "LABEL_WITH_R",
    "ROOTFS_REPO",
    "VENV",
    "WORKLOAD_FOLDERS",
]
