"""Many container kernels at once: simultaneous starts, and the memory of idle kernels.

    python benchmarks/concurrency.py [--kernels 20] [--idle 50] [--batch 10] [--settle 10]
                                     [--plot out.png] [--json out.json]

1. **Simultaneous starts**: ``--kernels`` kernels of ``dss-local`` started with one
   ``asyncio.gather`` (``AsyncKernelManager`` + ``ContainerKernelSpecManager``, as a Jupyter
   server does): the wall time, each kernel's time to its first kernel_info reply, whether all
   succeeded and whether any two got the same port (the connection infos must be distinct).
2. **Idle memory**: ``--idle`` kernels started in batches of ``--batch`` (the machine has two
   cores), left idle for ``--settle`` seconds, then each container's memory read from its
   cgroup, with the host's available memory before and after and the ``docker-proxy``
   processes (one per published port, outside the containers' cgroups). Then everything is
   shut down and the script checks that no container of this process is left.

Like ``kernel_start.py`` it prints and never asserts on a duration or a size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_client import AsyncKernelManager
from rich.console import Console
from rich.table import Table

from jupyter_dss_containers import ownership
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager
from jupyter_dss_containers.launcher import PORT_NAMES

sys.path.insert(0, str(Path(__file__).parent))
from kernel_start import (
    READY_TIMEOUT,
    machine_info,
    percentile,
    remove_leftover_containers,
)

CONFIG = "local"
KERNEL_NAME = f"dss-{CONFIG}"
CGROUP_V1 = Path("/sys/fs/cgroup/memory/docker")
MiB = 2**20


# --------------------------------------------------------------------------- kernels


@dataclass
class Started:
    """One kernel start of a concurrent batch: its manager, client and seconds to ready.

    ``launched`` (``start_kernel()`` returned) tells a slow daemon apart from slow kernels.
    """

    km: AsyncKernelManager | None
    kc: Any
    seconds: float
    launched: float = float("nan")
    error: str | None = None


async def start_one(spec_manager: ContainerKernelSpecManager) -> Started:
    """Start a ``dss-local`` kernel and wait for its first kernel_info reply; never raises.

    A failure is kept (with its manager, so it is still shut down) instead of cancelling
    the other starts of the batch.
    """
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=spec_manager)
    started = time.perf_counter()
    kc, launched = None, float("nan")
    try:
        await km.start_kernel()
        launched = time.perf_counter() - started
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=READY_TIMEOUT)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        return Started(km, kc, time.perf_counter() - started, launched, error)
    return Started(km, kc, time.perf_counter() - started, launched)


async def start_many(n: int, spec_manager: ContainerKernelSpecManager) -> list[Started]:
    return list(await asyncio.gather(*(start_one(spec_manager) for _ in range(n))))


async def stop_all(kernels: Sequence[Started]) -> None:
    """Shut every kernel down at once; a failing shutdown does not stop the others."""

    async def stop(k: Started) -> None:
        if k.kc is not None:
            k.kc.stop_channels()
        if k.km is not None and k.km.has_kernel:
            await k.km.shutdown_kernel(now=True)

    await asyncio.gather(*(stop(k) for k in kernels), return_exceptions=True)


def port_collisions(kernels: Sequence[Started]) -> list[tuple[str, int]]:
    """(ip, port) pairs used by more than one kernel (or twice by one): must be empty."""
    seen: dict[tuple[str, int], int] = {}
    for k in kernels:
        if k.km is None or k.error:
            continue
        info = k.km.get_connection_info()
        for name in PORT_NAMES:
            address = (str(info["ip"]), int(info[name]))
            seen[address] = seen.get(address, 0) + 1
    return sorted(a for a, count in seen.items() if count > 1)


def leftovers() -> list[str]:
    """Managed containers of this process still present (after everything was shut down)."""
    import docker

    api = docker.from_env().api
    labels = [f"{ownership.MANAGED}=true", f"{ownership.SERVER_ID}={_server_id()}"]
    return [row["Id"][:12] for row in api.containers(all=True, filters={"label": labels})]


def _server_id() -> str:
    return ownership.this_process().server_id


# --------------------------------------------------------------------------- memory


@dataclass
class Memory:
    """A container's memory, bytes, from its cgroup (v1 names; v2 mapped onto them)."""

    usage: int
    cache: int
    rss: int
    inactive_file: int

    @property
    def usage_minus_cache(self) -> int:
        return self.usage - self.cache


def container_memory(container_id: str) -> Memory:
    """Read from the cgroup v1 files when present (instant), else one docker stats sample."""
    folder = CGROUP_V1 / container_id
    if folder.is_dir():
        usage = int((folder / "memory.usage_in_bytes").read_text())
        stats = dict(
            (k, int(v))
            for k, v in (line.split() for line in (folder / "memory.stat").read_text().splitlines())
        )
    else:
        import docker

        raw = docker.from_env().api.stats(container_id, stream=False, one_shot=True)
        usage, stats = raw["memory_stats"]["usage"], raw["memory_stats"]["stats"]
    return Memory(
        usage=usage,
        cache=stats.get("total_cache", stats.get("file", 0)),
        rss=stats.get("total_rss", stats.get("anon", 0)),
        inactive_file=stats.get("total_inactive_file", stats.get("inactive_file", 0)),
    )


def workload_id(k: Started) -> str | None:
    provisioner = k.km.provisioner if k.km is not None else None
    return getattr(provisioner, "workload_id", None)


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (MemFree, MemAvailable, ...)."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, value = line.split(":", 1)
        out[name] = int(value.split()[0]) * 1024
    return out


def docker_proxies() -> tuple[int, int]:
    """Count and total PSS (bytes) of docker-proxy processes: per published port, host-side.

    PSS, not RSS: the proxies share their binary's pages, which RSS would count each time.
    """
    count = pss = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() != "docker-proxy":
                continue
            rollup = (comm.parent / "smaps_rollup").read_text().splitlines()
            count += 1
            pss += sum(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
    return count, pss


def host_snapshot() -> dict[str, int]:
    info = meminfo()
    proxies, proxy_pss = docker_proxies()
    return {
        "MemAvailable": info["MemAvailable"],
        "MemFree": info["MemFree"],
        "docker-proxy processes": proxies,
        "docker-proxy PSS": proxy_pss,
    }


# --------------------------------------------------------------------------- runs


async def simultaneous(n: int, console: Console) -> dict[str, Any]:
    """Part 1: n starts in one gather; wall time, per-kernel times, errors, collisions."""
    spec_manager = ContainerKernelSpecManager()
    started = time.perf_counter()
    kernels = await start_many(n, spec_manager)
    wall = time.perf_counter() - started
    try:
        collisions = port_collisions(kernels)
    finally:
        await stop_all(kernels)
    errors = [k.error for k in kernels if k.error]
    for error in errors:
        console.print(f"[red]start failed: {error}")
    ok = [k.seconds for k in kernels if not k.error]
    launched = [k.launched for k in kernels if not k.error]
    return {
        "kernels": n,
        "wall": wall,
        "succeeded": len(ok),
        "errors": errors,
        "per_kernel": [k.seconds for k in kernels],
        "per_kernel_launched": [k.launched for k in kernels],
        "launched_p50": statistics.median(launched) if launched else float("nan"),
        "launched_min": min(launched) if launched else float("nan"),
        "p50": statistics.median(ok) if ok else float("nan"),
        "p95": percentile(ok, 95) if ok else float("nan"),
        "max": max(ok) if ok else float("nan"),
        "port_collisions": [list(a) for a in collisions],
        "left_after_shutdown": leftovers(),
    }


async def idle_memory(n: int, batch: int, settle: float, console: Console) -> dict[str, Any]:
    """Part 2: n kernels started batch by batch, left idle, then measured and shut down."""
    spec_manager = ContainerKernelSpecManager()
    before = host_snapshot()
    kernels: list[Started] = []
    batches: list[float] = []
    try:
        while len(kernels) < n:
            started = time.perf_counter()
            kernels += await start_many(min(batch, n - len(kernels)), spec_manager)
            batches.append(time.perf_counter() - started)
            console.print(f"  {len(kernels):>3}/{n} started (batch {batches[-1]:.1f} s)")
        await asyncio.sleep(settle)  # let imports finish and the kernels sit idle
        memories = {
            wid: await asyncio.to_thread(container_memory, wid)
            for k in kernels
            if not k.error and (wid := workload_id(k))
        }
        after = host_snapshot()
    finally:
        await stop_all(kernels)
    return {
        "kernels": n,
        "succeeded": sum(1 for k in kernels if not k.error),
        "errors": [k.error for k in kernels if k.error],
        "batch_seconds": batches,
        "settle_seconds": settle,
        "memory": {
            wid: asdict(m) | {"usage_minus_cache": m.usage_minus_cache}
            for wid, m in memories.items()
        },
        "host_before": before,
        "host_after": after,
        "left_after_shutdown": leftovers(),
    }


# --------------------------------------------------------------------------- output


def simultaneous_table(r: dict[str, Any]) -> Table:
    table = Table(title=f"{r['kernels']} {KERNEL_NAME} kernels started at once (asyncio.gather)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("wall time, all ready (s)", f"{r['wall']:.2f}"),
        ("per kernel start_kernel() returned, min (s)", f"{r['launched_min']:.2f}"),
        ("per kernel start_kernel() returned, p50 (s)", f"{r['launched_p50']:.2f}"),
        ("per kernel to ready, p50 (s)", f"{r['p50']:.2f}"),
        ("per kernel to ready, p95 (s)", f"{r['p95']:.2f}"),
        ("per kernel to ready, max (s)", f"{r['max']:.2f}"),
        ("succeeded", f"{r['succeeded']}/{r['kernels']}"),
        ("port collisions", str(len(r["port_collisions"]))),
        ("containers left after shutdown", str(len(r["left_after_shutdown"]))),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def memory_table(r: dict[str, Any]) -> Table:
    """Per-kernel statistics of each cgroup figure, then the host's view."""
    table = Table(title=f"Memory of {r['succeeded']} idle {KERNEL_NAME} kernels (MiB)")
    for column in ("measure", "mean", "median", "p95", "total"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    memory = list(r["memory"].values())
    for key, label in (
        ("usage_minus_cache", "container: usage - cache"),
        ("rss", "container: rss"),
        ("cache", "container: cache"),
        ("usage", "container: usage"),
    ):
        values = [m[key] / MiB for m in memory]
        if values:
            table.add_row(
                label,
                f"{statistics.mean(values):.1f}",
                f"{statistics.median(values):.1f}",
                f"{percentile(values, 95):.1f}",
                f"{sum(values):.0f}",
            )
    before, after = r["host_before"], r["host_after"]
    used = (before["MemAvailable"] - after["MemAvailable"]) / MiB
    per = used / max(r["succeeded"], 1)
    table.add_row("host: MemAvailable drop", f"{per:.1f}", "", "", f"{used:.0f}")
    proxy = (after["docker-proxy PSS"] - before["docker-proxy PSS"]) / MiB
    count = after["docker-proxy processes"] - before["docker-proxy processes"]
    table.add_row(
        f"host: +{count} docker-proxy PSS",
        f"{proxy / max(r['succeeded'], 1):.1f}",
        "",
        "",
        f"{proxy:.0f}",
    )
    table.add_row(
        "host: MemAvailable before / after",
        "",
        "",
        "",
        f"{before['MemAvailable'] / MiB:.0f} / {after['MemAvailable'] / MiB:.0f}",
    )
    table.add_row("succeeded", "", "", "", f"{r['succeeded']}/{r['kernels']}")
    table.add_row("containers left after shutdown", "", "", "", str(len(r["left_after_shutdown"])))
    return table


def write_plot(report: dict[str, Any], path: str) -> None:
    """Start times of the simultaneous run and per-kernel memory of the idle run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if "simultaneous" in report:
        times = sorted(report["simultaneous"]["per_kernel"])
        axes[0].bar(range(1, len(times) + 1), times, color="C0")
        axes[0].set_title(f"{len(times)} kernels started at once: time to ready (sorted)")
        axes[0].set_xlabel("kernel")
        axes[0].set_ylabel("s")
    if "idle" in report:
        memory = [m["usage_minus_cache"] / MiB for m in report["idle"]["memory"].values()]
        axes[1].hist(memory, bins=15, color="C1")
        axes[1].set_title(f"{len(memory)} idle kernels: usage - cache per container")
        axes[1].set_xlabel("MiB")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def use_config(folder: Path) -> None:
    """Only the ``local`` config (the embedded default's), as this run's config file."""
    path = folder / "dss_containers.yaml"
    path.write_text(
        "execution_configs:\n"
        f"  {CONFIG}: {{backend: docker, image: default, permissions: {{groups: ['*']}}}}\n"
    )
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=20, help="simultaneous starts (0: skip)")
    parser.add_argument("--idle", type=int, default=50, help="idle kernels measured (0: skip)")
    parser.add_argument("--batch", type=int, default=10, help="idle kernels started at once")
    parser.add_argument("--settle", type=float, default=10.0, help="idle seconds before reading")
    parser.add_argument("--plot", metavar="PNG", help="write a plot (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw results")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if args.kernels:
        console.print(f"starting {args.kernels} kernels at once ...")
        report["simultaneous"] = await simultaneous(args.kernels, console)
        console.print(simultaneous_table(report["simultaneous"]))
    if args.idle:
        console.print(f"starting {args.idle} kernels in batches of {args.batch} ...")
        report["idle"] = await idle_memory(args.idle, args.batch, args.settle, console)
        console.print(memory_table(report["idle"]))
    return report


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    machine = machine_info()
    console.print(" | ".join(f"{k}: {v}" for k, v in machine.items()))
    use_config(Path(tempfile.mkdtemp(prefix="dss-bench-")))
    report: dict[str, Any] = {"machine": machine}
    try:
        report.update(asyncio.run(run(args, console)))
    finally:
        removed = remove_leftover_containers()
        if removed:
            console.print(f"[yellow]removed leftover containers: {len(removed)}")
    console.print(f"load avg (1 min, at end): {os.getloadavg()[0]:.2f}")
    if args.plot:
        write_plot(report, args.plot)
        console.print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"json: {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # the finally in main() has already removed our containers
