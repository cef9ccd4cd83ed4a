"""Starting, driving and stopping a kernel through plain jupyter_client, for every suite."""

from __future__ import annotations

import contextlib
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jupyter_client import AsyncKernelManager

from jupyter_dss_containers.config import ConfigFile, load_config
from jupyter_dss_containers.kernelspecs import install_kernel_specs
from jupyter_dss_containers.permissions import process_identity

#: prints "uid memory-limit cpu-quota" from inside a container (cgroup v1 or v2)
CGROUP_PROBE = textwrap.dedent(
    """
    import os, socket
    cg = '/sys/fs/cgroup/'
    def first(*paths):
        for p in paths:
            if os.path.exists(p):
                return open(p).read().strip()
    mem = first(cg + 'memory/memory.limit_in_bytes', cg + 'memory.max')
    quota = first(cg + 'cpu/cpu.cfs_quota_us', cg + 'cpu.max')
    print(os.getuid(), mem, quota.split()[0])
    """
)

#: on a read-only root: "root: ERRNO strerror", "tmp ok home ok", "uid home"
READ_ONLY_PROBE = textwrap.dedent(
    """
    import errno, os, pathlib
    pathlib.Path("/tmp/scratch.txt").write_text("tmp ok")
    (pathlib.Path.home() / "notes.txt").write_text("home ok")
    try:
        open("/written-to-root", "w")
    except OSError as exc:
        print("root:", errno.errorcode[exc.errno], exc.strerror)
    print(open("/tmp/scratch.txt").read(), (pathlib.Path.home() / "notes.txt").read_text())
    print(os.getuid(), str(pathlib.Path.home()))
    """
)


@contextlib.contextmanager
def config_in_use(path: Path, text: str) -> Iterator[ConfigFile]:
    """``text`` as the config file named by $DSS_CONTAINERS_CONFIG, its kernel specs installed."""
    path.write_text(text)
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)
    try:
        config_file = load_config()
        install_kernel_specs(config_file, process_identity(config_file))
        yield config_file
    finally:
        os.environ.pop("DSS_CONTAINERS_CONFIG", None)


async def start(kernel_name: str, **manager_kwargs: Any) -> tuple[AsyncKernelManager, Any]:
    """A started kernel and a client that has had its kernel_info reply."""
    km = AsyncKernelManager(kernel_name=kernel_name, **manager_kwargs)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc


def printed_into(out: list[str]) -> Callable[[dict], None]:
    """An ``output_hook`` that appends what a cell prints (streams, tracebacks) to ``out``."""

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    return collect


async def run(kc: Any, code: str, timeout: float = 30) -> tuple[dict, str]:
    """Execute code; return the reply content and everything printed (tracebacks too)."""
    out: list[str] = []
    reply = await kc.execute_interactive(code, timeout=timeout, output_hook=printed_into(out))
    return reply["content"], "".join(out)


async def stop(km: AsyncKernelManager, kc: Any) -> None:
    kc.stop_channels()
    await km.shutdown_kernel(now=False)


def kernel_owner_script(folder: Path, kernel_name: str) -> Path:
    """A script that starts one kernel, prints its id and lives on: an owner to SIGKILL."""
    script = folder / f"owner-{kernel_name}.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio
            from jupyter_client import AsyncKernelManager
            async def main():
                km = AsyncKernelManager(kernel_name={kernel_name!r})
                await km.start_kernel()
                print(km.kernel_id, flush=True)
                await asyncio.sleep(300)
            asyncio.run(main())
            """
        )
    )
    return script
