"""Free and total GPUs of a ``docker.gpus: N`` config for ``GET configs``: asked of the
daemons themselves (their GPU list and the labels of what runs there), bounded in time."""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import ConfigFile, ExecutionConfig

#: seconds ``GET configs`` waits for a config's daemons
GPU_TIMEOUT = 5.0


async def gpus_of(config_file: ConfigFile, config: ExecutionConfig) -> dict[str, Any] | None:
    """``{"free", "total", "hosts": [...]}``, or None for a config that allocates no GPUs
    or whose daemons only a trusted launcher reaches."""
    from ..backends.remote import launcher_url

    if config.backend != "docker" or not config.docker.allocates_gpus or launcher_url():
        return None
    from ..backends.docker.hosts import gpu_summary
    from ..images import resolve_image

    image = await asyncio.to_thread(resolve_image, config_file, config, None)
    try:
        return await asyncio.wait_for(gpu_summary(config, image), GPU_TIMEOUT)
    except asyncio.TimeoutError:
        return {
            "free": 0,
            "total": 0,
            "hosts": [
                {
                    "name": "?",
                    "free": None,
                    "total": None,
                    "error": f"no answer in {GPU_TIMEOUT:g} s",
                }
            ],
        }
