"""Kernel start latency: a local ipykernel against a container kernel, measured in one run.

    python benchmarks/kernel_start.py [--runs 7] [--warmup 1] [--plot out.png] [--json out.json]
                                      [--steps N]

For each variant, the time from ``AsyncKernelManager.start_kernel()`` to the first
``kernel_info`` reply (``client.wait_for_ready()``). The variants run interleaved (local,
container, local, container, ...) so that machine noise hits all of them alike; each kernel is
shut down after it is measured, outside the timing. It is a benchmark: it prints, it never
asserts on a duration.

The phases of ``start_kernel`` are timed by a kernel manager subclass that wraps
jupyter_client's own three steps (pre-start: kernel spec and the provisioner's
``pre_launch``; launch: the provisioner's ``launch_kernel``; post-start: the control socket),
so the provisioner is measured as a Jupyter server drives it, without touching it.
``--steps N`` adds a breakdown of a container start done step by step with the docker SDK
(config, image inspect, create, put_archive, start, port inspection, kernel boot) and the
cost of importing ipykernel inside the image and on the host.

More variants plug in by implementing :class:`Variant` and being added to
:func:`default_variants`. ``--gateway`` (on when gateway_provisioners imports) adds its
``DockerProvisioner`` on an image built FROM our base image (see ``gateway.py``) and a table of
our starts against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from queue import Empty
from typing import Any, Protocol

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from rich.console import Console
from rich.table import Table
from traitlets import Instance
from traitlets.config import LoggingConfigurable

from jupyter_dss_containers import ownership
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager
from jupyter_dss_containers.launcher import CONNECTION_FILE, PORT_NAMES
from jupyter_dss_containers.pool import WarmPool

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or imported by a sibling
import gateway

READY_TIMEOUT = 120.0
BASELINE = "local ipykernel"
GATEWAY = "gateway DockerProvisioner"
CONTAINER_CONFIG = "local"  # ipc sockets (the default on a local daemon)
TCP_CONFIG = "local-tcp"  # the same on TCP (published ports, CurveZMQ)
POOLED_CONFIG = "pooled"
STAGES = ("launch", "ready")
PHASES = ("pre", "launch_kernel", "post", "boot")  # launch split up, then boot


# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One kernel start, in seconds from the call to ``start_kernel()``.

    ``launch`` is when ``start_kernel()`` returned, ``ready`` when the first kernel_info
    reply came; ``pre``/``launch_kernel``/``post`` split ``launch`` into jupyter_client's
    phases so a slow start can be pinned on the spec, the provisioner or the sockets.
    """

    launch: float
    ready: float
    pre: float = float("nan")
    launch_kernel: float = float("nan")
    post: float = float("nan")

    @property
    def boot(self) -> float:
        """From ``start_kernel()`` returning to the kernel answering: the kernel's own start."""
        return self.ready - self.launch


class TimedKernelManager(AsyncKernelManager):
    """An AsyncKernelManager that records how long each phase of ``start_kernel`` took.

    Overriding jupyter_client's phase methods (not the provisioner) keeps the measurement
    non-invasive and identical for every provisioner.
    """

    phase_seconds: dict[str, float]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase_seconds = {}

    async def _timed(self, phase: str, coro: Any) -> Any:
        started = time.perf_counter()
        try:
            return await coro
        finally:
            self.phase_seconds[phase] = time.perf_counter() - started

    async def _async_pre_start_kernel(self, **kw: Any) -> Any:
        return await self._timed("pre", super()._async_pre_start_kernel(**kw))

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        await self._timed("launch_kernel", super()._async_launch_kernel(kernel_cmd, **kw))

    async def _async_post_start_kernel(self, **kw: Any) -> None:
        await self._timed("post", super()._async_post_start_kernel(**kw))


# --------------------------------------------------------------------------- variants


class Variant(Protocol):
    """What the benchmark runs: a name, a timed start and an untimed stop.

    ``stop`` must be safe to call after a failed or interrupted ``start`` (it is called
    from a ``finally``), and must leave no kernel or container behind.
    """

    name: str

    async def start(self) -> Sample: ...

    async def stop(self) -> None: ...


@dataclass
class KernelManagerVariant:
    """A kernel started by plain jupyter_client, as nbclient or a Jupyter server would."""

    name: str
    kernel_name: str
    spec_manager: Callable[[], KernelSpecManager] = KernelSpecManager
    env: dict[str, str] | None = None  # None: jupyter_client passes the host's environment
    parent: Any = None  # the kernel manager's parent (a pooled variant's holds the pool)
    _km: TimedKernelManager | None = field(default=None, init=False, repr=False)
    _kc: Any = field(default=None, init=False, repr=False)

    async def start(self) -> Sample:
        km = self._km = TimedKernelManager(
            kernel_name=self.kernel_name,
            kernel_spec_manager=self.spec_manager(),
            parent=self.parent,
        )
        started = time.perf_counter()
        await km.start_kernel(**({} if self.env is None else {"env": self.env}))
        launched = time.perf_counter()
        self._kc = km.client()
        self._kc.start_channels()
        await self._kc.wait_for_ready(timeout=READY_TIMEOUT)
        ready = time.perf_counter()
        return Sample(
            launch=launched - started,
            ready=ready - started,
            pre=km.phase_seconds.get("pre", float("nan")),
            launch_kernel=km.phase_seconds.get("launch_kernel", float("nan")),
            post=km.phase_seconds.get("post", float("nan")),
        )

    async def stop(self) -> None:
        kc, km, self._kc, self._km = self._kc, self._km, None, None
        if kc is not None:
            kc.stop_channels()
        if km is not None and km.has_kernel:
            await km.shutdown_kernel(now=True)


class PoolHost(LoggingConfigurable):
    """Holds the benchmark's warm pool as a server's extension holds its own: kernels whose
    manager it parents take from it (see ``pool.pool_of``)."""

    warm_pool = Instance(WarmPool, args=())


POOL_HOST = PoolHost()


@dataclass
class PooledVariant(KernelManagerVariant):
    """A container kernel taken from a warm pool that was filled (untimed) beforehand."""

    parent: Any = POOL_HOST

    async def start(self) -> Sample:
        await POOL_HOST.warm_pool.fill_once()  # not timed: a server keeps its pools filled
        return await super().start()


@dataclass
class GatewayVariant(KernelManagerVariant):
    """gateway_provisioners' DockerProvisioner; remembers kernel ids to clean up after it."""

    kernel_ids: set[str] = field(default_factory=set)

    async def start(self) -> Sample:
        try:
            return await super().start()
        finally:
            if self._km is not None and self._km.kernel_id:
                self.kernel_ids.add(self._km.kernel_id)


def gateway_variant(setup: gateway.GatewaySetup) -> GatewayVariant:
    return GatewayVariant(
        GATEWAY,
        gateway.GATEWAY_KERNEL,
        spec_manager=gateway.spec_manager_for(setup.kernels_dir),
        env=gateway.kernel_env(setup.gateway_ip),
        kernel_ids=setup.kernel_ids,
    )


def default_variants(gateway_setup: gateway.GatewaySetup | None = None) -> list[Variant]:
    """The variants compared; the first is the baseline of the ratio column."""
    extra: list[Variant] = [gateway_variant(gateway_setup)] if gateway_setup else []
    return [
        KernelManagerVariant(BASELINE, "python3"),
        KernelManagerVariant(
            f"container dss-{CONTAINER_CONFIG} (ipc)",
            f"dss-{CONTAINER_CONFIG}",
            spec_manager=ContainerKernelSpecManager,
        ),
        KernelManagerVariant(
            f"container dss-{TCP_CONFIG}",
            f"dss-{TCP_CONFIG}",
            spec_manager=ContainerKernelSpecManager,
        ),
        PooledVariant(
            f"pooled dss-{POOLED_CONFIG}",
            f"dss-{POOLED_CONFIG}",
            spec_manager=ContainerKernelSpecManager,
        ),
        *extra,
    ]


def use_benchmark_config(folder: Path) -> Path:
    """The embedded default's ``local`` plus a pooled twin, as the config file of this run."""
    path = folder / "dss_containers.yaml"
    path.write_text(
        "execution_configs:\n"
        f"  {CONTAINER_CONFIG}: {{backend: docker, image: default, "
        "permissions: {groups: ['*']}}\n"
        f"  {TCP_CONFIG}: {{backend: docker, image: default, transport: tcp, "
        "permissions: {groups: ['*']}}\n"
        f"  {POOLED_CONFIG}: {{backend: docker, image: default, warm_pool: {{size: 1}}, "
        "permissions: {groups: ['*']}}\n"
    )
    os.environ["DSS_CONTAINERS_CONFIG"] = str(path)
    POOL_HOST.warm_pool.config_file = str(path)
    return path


async def measure(
    variants: Sequence[Variant], runs: int, warmup: int, console: Console
) -> dict[str, list[Sample]]:
    """Start and stop every variant in turn, ``warmup + runs`` rounds; keep the last ``runs``.

    Interleaving spreads slow moments of the machine (other builds, page cache) over all
    variants instead of penalising whichever ran during them.
    """
    samples: dict[str, list[Sample]] = {v.name: [] for v in variants}
    for round_ in range(warmup + runs):
        label = "warmup" if round_ < warmup else f"run {round_ - warmup + 1}/{runs}"
        for variant in variants:
            try:
                sample = await variant.start()
            finally:
                await variant.stop()
            console.print(
                f"{label:>9}  {variant.name:<26} launch {sample.launch:6.3f} s  "
                f"ready {sample.ready:6.3f} s",
                highlight=False,
            )
            if round_ >= warmup:
                samples[variant.name].append(sample)
    return samples


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), no numpy needed."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
    }


def summary(samples: dict[str, list[Sample]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per variant and stage: n, median, p95, min, max and the ratio of medians to baseline."""
    baseline = next(iter(samples))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, rows in samples.items():
        out[name] = {}
        for stage in (*STAGES, *PHASES):
            out[name][stage] = summarize([getattr(s, stage) for s in rows])
    for name in out:
        for stage in out[name]:
            base = out[baseline][stage]["median"]
            out[name][stage]["ratio"] = out[name][stage]["median"] / base if base else float("nan")
    return out


# --------------------------------------------------------------------------- output


def machine_info() -> dict[str, str]:
    """Enough about the host to compare two runs of the benchmark."""
    info = {
        "cpus": str(os.cpu_count()),
        "memory": _memory(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "jupyter_client": version("jupyter_client"),
        "ipykernel (host)": version("ipykernel"),
        "load avg (1 min, at start)": f"{os.getloadavg()[0]:.2f}",
    }
    try:
        import docker

        info["docker engine"] = docker.from_env().version().get("Version", "?")
    except Exception as exc:  # the benchmark still reports the local kernel
        info["docker engine"] = f"unavailable ({exc.__class__.__name__})"
    return info


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "?"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def results_table(stats: dict[str, dict[str, dict[str, float]]]) -> Table:
    table = Table(title="Kernel start: start_kernel() to launch / first kernel_info reply (s)")
    for column in ("variant", "stage", "n", "median", "p95", "min", "max", f"x {BASELINE}"):
        table.add_column(column, justify="left" if column in ("variant", "stage") else "right")
    for name, stages in stats.items():
        for stage in STAGES:
            s = stages[stage]
            table.add_row(
                name if stage == STAGES[0] else "",
                stage,
                str(s["n"]),
                *(f"{s[k]:.3f}" for k in ("median", "p95", "min", "max")),
                f"{s['ratio']:.2f}",
            )
    return table


def phases_table(stats: dict[str, dict[str, dict[str, float]]]) -> Table:
    table = Table(title="Where start_kernel() spends its time (medians, s)")
    table.add_column("variant")
    for column in ("pre-start", "launch_kernel", "post-start", "boot (to ready)", "ready"):
        table.add_column(column, justify="right")
    for name, s in stats.items():
        table.add_row(
            name,
            *(f"{s[k]['median']:.3f}" for k in (*PHASES, "ready")),
        )
    return table


def gateway_table(stats: dict[str, dict[str, dict[str, float]]]) -> Table:
    """Our container variants against gateway_provisioners, to ready: the issue's 3x goal."""
    table = Table(title=f"Ours against {GATEWAY} (to ready, s)")
    for column in ("variant", "median", "p95", "x gateway (median)", "gateway / ours"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    theirs = stats[GATEWAY]["ready"]
    table.add_row(GATEWAY, f"{theirs['median']:.3f}", f"{theirs['p95']:.3f}", "1.00", "1.0x")
    for name in stats:
        if name in (BASELINE, GATEWAY):
            continue
        ours = stats[name]["ready"]
        table.add_row(
            name,
            f"{ours['median']:.3f}",
            f"{ours['p95']:.3f}",
            f"{ours['median'] / theirs['median']:.2f}",
            f"{theirs['median'] / ours['median']:.1f}x",
        )
    return table


def write_plot(samples: dict[str, list[Sample]], path: str) -> None:
    """Box plots with every run drawn on top: seven points say more than a box alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(samples)
    top = max(getattr(s, stage) for rows in samples.values() for s in rows for stage in STAGES)
    fig, axes = plt.subplots(1, len(STAGES), figsize=(5 * len(STAGES), 4), sharey=True)
    jitter = random.Random(0)
    for ax, stage in zip(axes, STAGES, strict=True):
        data = [[getattr(s, stage) for s in samples[n]] for n in names]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=10)
        for i, values in enumerate(data, start=1):
            xs = [i + jitter.uniform(-0.08, 0.08) for _ in values]
            ax.scatter(xs, values, s=14, alpha=0.7, zorder=3, color=f"C{i - 1}")
        ax.set_title(f"{stage} (s after start_kernel())")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0, top * 1.1)
    fig.suptitle("Kernel start latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- container steps


def container_steps(runs: int, console: Console) -> dict[str, list[float]]:
    """A container kernel start done by hand with the docker SDK, each call timed.

    Mirrors what the provisioner and DockerBackend do (config and image tag, image inspect
    for the user, create with the same security options and published ports, put_archive of
    the connection file, start, inspect for the host ports), then waits for kernel_info.
    A lower bound of the provisioner's own path, and a map of where it goes.
    """
    steps: dict[str, list[float]] = {}
    for round_ in range(runs + 1):  # the first round warms the page cache and is dropped
        timings = _one_container_start()
        if round_:
            for step, seconds in timings.items():
                steps.setdefault(step, []).append(seconds)
        console.print("    steps  " + ("warmup" if not round_ else f"run {round_}/{runs}"))
    return steps


def _one_container_start() -> dict[str, float]:
    """One start with the provisioner's options for the default image; seconds per step."""
    import docker

    from jupyter_dss_containers import images
    from jupyter_dss_containers.backends.docker import docker_client, private_tar
    from jupyter_dss_containers.config import load_config

    timings: dict[str, float] = {}
    clock = _Clock(timings)
    config_file = load_config()
    clock.lap("load config (yaml + schema)")
    config = config_file.get(CONTAINER_CONFIG)
    image = images.resolve_image(config_file, config)
    clock.lap("resolve image tag (hash)")
    client: docker.DockerClient = docker_client(config.docker)
    user = client.images.get(image).attrs["Config"].get("User") or "1000:100"
    clock.lap("image inspect (user)")
    ports = tuple(41000 + i for i in range(len(PORT_NAMES)))
    key = secrets.token_hex(32)
    connection = {
        "transport": "tcp",
        "ip": "0.0.0.0",
        "key": key,
        "signature_scheme": "hmac-sha256",
        **dict(zip(PORT_NAMES, ports, strict=True)),
    }
    container = client.containers.create(
        image,
        command=["python", "-m", "ipykernel_launcher", "-f", CONNECTION_FILE],
        labels=ownership.workload_labels("kernel", config.name, "benchmark"),
        user=user,
        detach=True,
        init=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        ports={f"{p}/tcp": ("127.0.0.1", None) for p in ports},
    )
    try:
        clock.lap("containers.create")
        container.put_archive(
            "/", private_tar({CONNECTION_FILE: json.dumps(connection).encode()}, user)
        )
        clock.lap("put_archive (connection file)")
        container.start()
        clock.lap("start")
        published = client.api.inspect_container(container.id)["NetworkSettings"]["Ports"]
        host_ports = {p: int(published[f"{p}/tcp"][0]["HostPort"]) for p in ports}
        clock.lap("inspect (host ports)")
        _wait_for_kernel(connection, host_ports)
        clock.lap("kernel boot (to first kernel_info reply)")
    finally:
        clock.restart()
        container.remove(force=True)
        timings["remove (not part of start)"] = clock.elapsed()
    return timings


class _Clock:
    """Laps into a dict, so each step is one line in the code that does it."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self.restart()

    def restart(self) -> None:
        self.last = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.last

    def lap(self, step: str) -> None:
        self.timings[step] = self.elapsed()
        self.restart()


def _wait_for_kernel(connection: dict[str, Any], host_ports: dict[int, int]) -> None:
    """Until the first kernel_info reply, polled every 10 ms (resent each second).

    Not ``wait_for_ready()``: that adds about 0.2 s of IOPub checks and flushing after the
    reply, which is the client's cost, not the kernel's boot.
    """
    from jupyter_client import BlockingKernelClient

    info = {
        **connection,
        "ip": "127.0.0.1",
        **{name: host_ports[connection[name]] for name in PORT_NAMES},
    }
    kc = BlockingKernelClient()
    kc.load_connection_info(info)
    kc.start_channels()
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            kc.kernel_info()
            resend = time.monotonic() + 1.0
            while time.monotonic() < resend:
                try:
                    if kc.get_shell_msg(timeout=0.01)["msg_type"] == "kernel_info_reply":
                        return
                except Empty:
                    pass
        raise RuntimeError(f"no kernel_info reply in {READY_TIMEOUT:.0f} s")
    finally:
        kc.stop_channels()


IMPORT_PROBE = (
    "import time; t = time.perf_counter(); import ipykernel.kernelapp; "
    "print(time.perf_counter() - t)"
)


def import_costs(runs: int) -> dict[str, list[float]]:
    """``import ipykernel.kernelapp`` in the image and on the host, and a bare container run.

    Tells the container's own overhead apart from Python and ipykernel starting, which
    depend on the interpreter and packages of the image (or the host), not on Docker.
    """
    import docker

    from jupyter_dss_containers import images
    from jupyter_dss_containers.config import load_config

    config_file = load_config()
    image = images.resolve_image(config_file, config_file.get(CONTAINER_CONFIG))
    client = docker.from_env()
    labels = ownership.workload_labels("kernel", CONTAINER_CONFIG, "benchmark")
    out: dict[str, list[float]] = {}
    for round_ in range(runs + 1):
        started = time.perf_counter()
        raw = client.containers.run(
            image, ["python", "-c", IMPORT_PROBE], labels=labels, remove=True
        )
        whole = time.perf_counter() - started
        started = time.perf_counter()
        client.containers.run(image, ["true"], labels=labels, remove=True)
        bare = time.perf_counter() - started
        host = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        ).stdout
        if round_:  # the first round warms caches
            out.setdefault("container: import ipykernel.kernelapp", []).append(float(raw))
            out.setdefault("host: import ipykernel.kernelapp", []).append(float(host))
            out.setdefault("container: docker run python -c <import> (whole)", []).append(whole)
            out.setdefault("container: docker run true (whole)", []).append(bare)
    return out


def steps_table(steps: dict[str, list[float]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("step")
    for column in ("n", "median", "min", "max"):
        table.add_column(column, justify="right")
    for step, values in steps.items():
        s = summarize(values)
        table.add_row(step, str(s["n"]), *(f"{s[k]:.3f}" for k in ("median", "min", "max")))
    return table


# --------------------------------------------------------------------------- cleanup


def remove_leftover_containers() -> list[str]:
    """Force-remove every container this process labelled, whatever interrupted the run.

    Scoped to this process's server id, so kernels of other processes are never touched.
    Low-level calls only: the high-level list inspects each container and races with a
    removal already under way.
    """
    try:
        import docker

        api = docker.from_env().api
        label = f"{ownership.SERVER_ID}={ownership.this_process().server_id}"
        leftovers = api.containers(all=True, filters={"label": label})
    except Exception:  # no daemon: nothing of ours can be running on it
        return []
    for row in leftovers:
        try:
            api.remove_container(row["Id"], force=True, v=True)
        except docker.errors.APIError as exc:  # gone meanwhile, or removal in progress
            if exc.status_code not in (404, 409):
                raise
    return [(row.get("Names") or [row["Id"][:12]])[0].lstrip("/") for row in leftovers]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds (default 1)")
    parser.add_argument("--plot", metavar="PNG", help="write a box/strip plot (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the raw samples and summary")
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="N",
        help="also time a container start step by step with the docker SDK, N times",
    )
    parser.add_argument(
        "--gateway",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare with gateway_provisioners' DockerProvisioner (default: if it imports)",
    )
    return parser.parse_args(argv)


def gateway_setup(
    wanted: bool | None, folder: Path, console: Console
) -> gateway.GatewaySetup | None:
    """Image and kernel spec of the gateway variant, or None (with a note) to run without it."""
    if wanted is False:
        return None
    why_not = gateway.available()
    if why_not:
        if wanted:
            raise SystemExit(f"--gateway: {why_not}")
        console.print(f"[yellow]note: gateway variant skipped: {why_not}")
        return None
    return gateway.prepare(folder, log=console.print)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    if os.environ.get("DSS_CONTAINERS_CONFIG"):
        console.print("[yellow]note: DSS_CONTAINERS_CONFIG is replaced by this run's own file")
    machine = machine_info()
    console.print(" | ".join(f"{k}: {v}" for k, v in machine.items()))
    report: dict[str, Any] = {"machine": machine, "runs": args.runs, "warmup": args.warmup}
    folder = Path(tempfile.mkdtemp(prefix="dss-bench-"))
    use_benchmark_config(folder)
    setup = gateway_setup(args.gateway, folder, console)
    try:
        samples = asyncio.run(measure(default_variants(setup), args.runs, args.warmup, console))
        stats = summary(samples)
        report.update(
            samples={n: [asdict(s) for s in v] for n, v in samples.items()}, summary=stats
        )
        console.print(results_table(stats))
        console.print(phases_table(stats))
        if GATEWAY in stats:
            console.print(gateway_table(stats))
        if args.plot:
            write_plot(samples, args.plot)
            console.print(f"plot: {args.plot}")
        if args.steps:
            steps = container_steps(args.steps, console)
            imports = import_costs(args.steps)
            report.update(steps=steps, imports=imports)
            console.print(steps_table(steps, "Container start, step by step (docker SDK, s)"))
            console.print(steps_table(imports, "Python and ipykernel start (s)"))
    finally:
        removed = remove_leftover_containers()
        removed += gateway.remove_containers(setup.kernel_ids) if setup else []
        if removed:
            console.print(f"[yellow]removed leftover containers: {', '.join(removed)}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"json: {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # the finally in main() has already removed our containers
