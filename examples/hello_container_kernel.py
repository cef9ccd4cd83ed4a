"""Start a kernel in a container from the embedded default config and run one cell in it."""

from __future__ import annotations

import asyncio
import time

from jupyter_client import AsyncKernelManager

from jupyter_dss_containers.config import load_config
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager

CODE = (
    "import os, socket, sys; "
    "print(f'hello from {socket.gethostname()} as uid {os.getuid()},', "
    "'Python', sys.version.split()[0])"
)


async def main() -> None:
    print(f"config file: {load_config().source}")
    manager = AsyncKernelManager(
        kernel_name="dss-local", kernel_spec_manager=ContainerKernelSpecManager()
    )
    began = time.perf_counter()
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=60)
    print(
        f"kernel ready in {time.perf_counter() - began:.2f} s "
        f"(container {manager.provisioner.workload_id[:12]})"
    )
    await client.execute_interactive(CODE, timeout=30)
    client.stop_channels()
    await manager.shutdown_kernel()
    print("kernel shut down; its container is removed")


if __name__ == "__main__":
    asyncio.run(main())
