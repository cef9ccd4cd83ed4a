"""An image whose ``nvidia-smi -L`` prints fake GPUs: the base image plus a shell script.

This engine has no NVIDIA runtime, so no container here gets a real GPU; the allocator's
Docker API calls stay real (the probe container, the labels, the listings, the race
check) and the configs use ``gpu_request: env``, which passes the allocated ids only in
NVIDIA_VISIBLE_DEVICES (what the nvidia runtime's legacy mode reads), so the containers
start on runc.
"""

from __future__ import annotations

import io
import tarfile

FAKE_GPU_IMAGE = "dss-test/fake-nvidia-smi:2gpus"

SCRIPT = b"""#!/bin/sh
echo "GPU 0: Fake Tensor Core GPU (UUID: GPU-fake-0000)"
echo "GPU 1: Fake Tensor Core GPU (UUID: GPU-fake-1111)"
"""


def build_fake_gpu_image(client, base_image: str, tag: str = FAKE_GPU_IMAGE) -> str:
    """Build (classic builder, no network) the base image with a fake nvidia-smi."""
    dockerfile = f"FROM {base_image}\nCOPY nvidia-smi /usr/local/bin/nvidia-smi\n".encode()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, body, mode in (("Dockerfile", dockerfile, 0o644), ("nvidia-smi", SCRIPT, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), mode
            tar.addfile(info, io.BytesIO(body))
    data.seek(0)
    client.images.build(fileobj=data, custom_context=True, tag=tag, network_mode="none", rm=True)
    return tag
