"""Soak: one real Jupyter server through many kernel start/stop cycles and jobs.

    python benchmarks/soak.py [--cycles 500] [--jobs 500] [--every 25] [--csv soak.csv]
                              [--keep-finished 20] [--config-file FILE --config NAME]

Starts ``python -m jupyter_server`` in a subprocess (its own temporary Jupyter dirs, job
store and config file naming a local Docker config on the base image ``default``), then
runs ``max(cycles, jobs)`` rounds; a round does, as a browser and the ``%%container`` magic
would, over REST:

* a kernel cycle: ``POST /api/kernels`` for ``dss-<config>``, a ``kernel_info_request`` on
  the kernel's websocket until its reply (the start latency: from the POST to that reply),
  then ``DELETE /api/kernels/<id>``;
* a job: ``POST /dss-containers/api/jobs`` with a trivial cell, then ``GET`` it until it
  has ended (the job latency).

Every ``--every`` rounds it samples the server process from ``/proc/<pid>``: resident
memory, open file descriptors and threads, with the median start and job latency of the
rounds since the last sample, the containers of this run still present, the entries of the
Jupyter runtime dir and of the job store. At the end it checks what must not leak: no
container of any of its kernels or jobs, no file or folder in the runtime dir naming one
of its kernels (connection files, ipc socket folders), no more job-store entries (on disk
and in ``GET jobs``) than ``JobService.keep_finished``, the growth of open fds after the
warm-up (the first sample) and whether the last sample's start latency is within 10% of
the first's. It prints a table and the verdicts, and writes the samples as CSV. It is a
benchmark: it reports; ``tests/test_soak.py`` runs a short one and asserts the leaks only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, str(Path(__file__).parent))  # run as a script or imported by a test
from jupyterserver import server_argv

API = "dss-containers/api/"
FINAL = ("succeeded", "failed", "cancelled")
CONFIG = """\
execution_configs:
  {name}:
    backend: docker
    image: {image}
    description: soak
    permissions: {{groups: ["*"]}}
"""
JOB_CODE = "x = 41 + 1\nx"
REQUEST_TIMEOUT = 120.0
# a runtime dir longer than this leaves no room for a kernel's socket paths under it
# (transport.py: <runtime>/dss-kernels/<8>/<32>/k-5 within 107 bytes)
MAX_RUNTIME_PATH = 48
KERNEL_FOLDERS = "dss-kernels"
# a cycle that fails so is counted and the soak goes on (a dead server ends it)
CYCLE_ERRORS = (RuntimeError, OSError, HTTPClientError, asyncio.TimeoutError)


@dataclass
class Sample:
    """The server after ``round`` rounds."""

    round: int
    kernels: int  # kernel cycles done
    jobs: int  # jobs done
    rss_mib: float
    fds: int
    threads: int
    start_median_s: float  # of the kernel starts since the previous sample
    job_median_s: float
    containers: int  # of this run's kernels and jobs, still present
    runtime_entries: int
    kernel_folders: int  # kernels' ipc socket folders under the runtime dir
    store_entries: int


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    start_seconds: list[float] = field(default_factory=list)
    job_seconds: list[float] = field(default_factory=list)
    failed_kernels: list[str] = field(default_factory=list)  # why each failed cycle failed
    failed_jobs: list[str] = field(default_factory=list)
    leaked_containers: list[str] = field(default_factory=list)
    leaked_runtime_entries: list[str] = field(default_factory=list)
    leaked_kernel_folders: list[str] = field(default_factory=list)
    store_entries: int = 0
    listed_jobs: int = 0
    keep_finished: int = 0
    fd_growth: int = 0  # the largest sample's fds after the warm-up sample, minus that one's
    runtime_growth: int = 0  # runtime dir entries at the end, minus at the warm-up sample
    rss_growth_mib: float = 0.0
    latency_ratio: float = float("nan")  # last sample's start median / first sample's
    seconds: float = 0.0

    @property
    def store_bounded(self) -> bool:
        return max(self.store_entries, self.listed_jobs) <= self.keep_finished

    @property
    def latency_within_10_percent(self) -> bool:
        return self.latency_ratio <= 1.10


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m jupyter_server`` on 127.0.0.1 with a token, in its own folder and session."""

    def __init__(self, folder: Path, config_file: Path, keep_finished: int):
        self.folder = folder
        self.token = secrets.token_hex(16)
        self.env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(config_file))
        for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR"):
            path = folder / var.lower()
            path.mkdir(parents=True, exist_ok=True)
            self.env[var] = str(path)
        self.runtime_dir = Path(self.env["JUPYTER_RUNTIME_DIR"])
        self.own_runtime_dir = len(os.fsencode(self.runtime_dir)) > MAX_RUNTIME_PATH
        if self.own_runtime_dir:  # kernel sockets must fit there (else they go to /tmp)
            self.runtime_dir = Path(tempfile.mkdtemp(prefix="dss-soak-rt-"))
            self.env["JUPYTER_RUNTIME_DIR"] = str(self.runtime_dir)
        self.store_dir = Path(self.env["JUPYTER_DATA_DIR"]) / "dss_containers" / "jobs"
        self.keep_finished = keep_finished
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = folder / "server.log"
        self.http = AsyncHTTPClient()

    async def start(self, timeout: float = 120) -> None:
        port = free_port()
        root = self.folder / "notebooks"
        root.mkdir(exist_ok=True)
        argv = server_argv(
            port, self.token, root, f"--JobService.keep_finished={self.keep_finished}"
        )
        self.proc = await asyncio.to_thread(self._spawn, argv, root)
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                await self.request("GET", "api/status", timeout=2)
                return
            except (OSError, HTTPClientError):
                await asyncio.sleep(0.3)
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.tail()}")

    def _spawn(self, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(
                argv, env=self.env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def request(
        self, method: str, path: str, body: Any = None, timeout: float = REQUEST_TIMEOUT
    ) -> tuple[int, Any]:
        """(status, JSON body); an HTTP error status is returned, not raised."""
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            allow_nonstandard_methods=True,
            connect_timeout=timeout,
            request_timeout=timeout,
        )
        response = await self.http.fetch(request, raise_error=False)
        if response.code == 599 and response.error is not None:  # no answer at all
            raise OSError(str(response.error))
        raw = response.body
        return response.code, json.loads(raw) if raw else None

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            if self.own_runtime_dir:
                shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


# --------------------------------------------------------------------------- one round


async def kernel_cycle(server: Server, kernel_name: str, ids: set[str]) -> float:
    """Start a kernel, wait for its first kernel_info reply on the websocket, delete it;
    its id goes into ``ids`` at once (a failed cycle is checked for leaks too)."""
    began = time.perf_counter()
    status, kernel = await server.request("POST", "api/kernels", {"name": kernel_name})
    if status != 201:
        raise RuntimeError(f"POST api/kernels: {status} {kernel}")
    kernel_id = kernel["id"]
    ids.add(kernel_id)
    try:
        session = uuid.uuid4().hex
        ws_url = server.url.replace("http://", "ws://")
        ws_url += f"api/kernels/{kernel_id}/channels?session_id={session}"
        headers = {"Authorization": f"token {server.token}"}
        conn = await websocket_connect(
            HTTPRequest(
                ws_url,
                headers=headers,
                connect_timeout=REQUEST_TIMEOUT,
                request_timeout=REQUEST_TIMEOUT,
            )
        )
        try:
            msg_id = uuid.uuid4().hex
            await conn.write_message(json.dumps(_kernel_info_request(msg_id, session)))
            while True:
                raw = await asyncio.wait_for(conn.read_message(), REQUEST_TIMEOUT)
                if raw is None:
                    raise RuntimeError(f"kernel {kernel_id}: websocket closed before its reply")
                msg = json.loads(raw)
                if (
                    msg.get("msg_type") == "kernel_info_reply"
                    and msg.get("parent_header", {}).get("msg_id") == msg_id
                ):
                    break
            ready = time.perf_counter() - began
        finally:
            conn.close()
    finally:
        status, body = await server.request("DELETE", f"api/kernels/{kernel_id}")
        if status != 204:
            raise RuntimeError(f"DELETE api/kernels/{kernel_id}: {status} {body}")
    return ready


def _kernel_info_request(msg_id: str, session: str) -> dict[str, Any]:
    header = {
        "msg_id": msg_id,
        "msg_type": "kernel_info_request",
        "username": "soak",
        "session": session,
        "date": "",
        "version": "5.3",
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": {},
        "content": {},
        "channel": "shell",
        "buffers": [],
    }


async def job_cycle(server: Server, config: str, ids: set[str]) -> float:
    """Submit a trivial cell as a job and poll it to its end (its id into ``ids`` at once);
    raises unless it succeeded."""
    began = time.perf_counter()
    status, body = await server.request("POST", f"{API}jobs", {"config": config, "code": JOB_CODE})
    if status != 201:
        raise RuntimeError(f"POST jobs: {status} {body}")
    job_id = body["id"]
    ids.add(job_id)
    while True:
        status, body = await server.request("GET", f"{API}jobs/{job_id}")
        if status != 200:
            raise RuntimeError(f"GET jobs/{job_id}: {status} {body}")
        if body["state"] in FINAL:
            break
        await asyncio.sleep(0.05)
    if body["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} {body['state']}: {body.get('message')}")
    return time.perf_counter() - began


# --------------------------------------------------------------------------- measuring


def process_sample(pid: int) -> tuple[float, int, int]:
    """(resident MiB, open fds, threads) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(values["VmRSS"].split()[0])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib / 1024, fds, int(values["Threads"])


def our_containers(docker_client: Any, kernel_ids: set[str], job_ids: set[str]) -> list[str]:
    """Names of the containers of these kernels and jobs still present (running or not)."""
    from jupyter_dss_containers import ownership

    # the list call alone (one snapshot): inspecting each would race with removals
    found = docker_client.api.containers(all=True, filters={"label": f"{ownership.MANAGED}=true"})
    return [
        c["Names"][0].lstrip("/") if c.get("Names") else c["Id"]
        for c in found
        if (c.get("Labels") or {}).get(ownership.KERNEL_ID) in kernel_ids
        or (c.get("Labels") or {}).get(ownership.JOB_ID) in job_ids
    ]


def runtime_entries(server: Server, kernel_ids: set[str] | None = None) -> list[str]:
    """Entries of the runtime dir (with ``kernel_ids``: those naming one of them)."""
    names = [p.name for p in server.runtime_dir.iterdir()]
    if kernel_ids is None:
        return names
    return [n for n in names if any(k in n for k in kernel_ids)]


def kernel_folders(server: Server) -> list[str]:
    """The kernels' private socket folders (``<runtime>/dss-kernels/<server>/<kernel>``)."""
    parent = server.runtime_dir / KERNEL_FOLDERS
    return sorted(str(p) for p in parent.glob("*/*")) if parent.is_dir() else []


def store_entries(server: Server) -> int:
    if not server.store_dir.is_dir():
        return 0
    return sum(1 for p in server.store_dir.iterdir() if p.is_dir())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (as numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --------------------------------------------------------------------------- the soak


async def soak(
    cycles: int,
    jobs: int,
    every: int,
    folder: Path,
    config_file: Path | None = None,
    config: str = "local",
    image: str = "default",
    keep_finished: int = 20,
    settle_seconds: float = 30.0,
    progress: bool = True,
) -> Report:
    """Run the soak against a fresh server in ``folder``; returns what it saw."""
    import docker

    client = await asyncio.to_thread(docker.from_env)
    if config_file is None:
        config_file = folder / "soak.yaml"
        config_file.write_text(CONFIG.format(name=config, image=image))
    server = Server(folder, config_file, keep_finished)
    report = Report(keep_finished=keep_finished)
    kernel_ids: set[str] = set()
    job_ids: set[str] = set()
    began = time.monotonic()
    await server.start()
    try:
        since_start: list[float] = []
        since_job: list[float] = []
        for n in range(1, max(cycles, jobs) + 1):
            if n <= cycles:
                try:
                    since_start.append(await kernel_cycle(server, f"dss-{config}", kernel_ids))
                except CYCLE_ERRORS as exc:
                    server.check_alive()
                    report.failed_kernels.append(f"round {n}: {type(exc).__name__}: {exc}")
            if n <= jobs:
                try:
                    since_job.append(await job_cycle(server, config, job_ids))
                except CYCLE_ERRORS as exc:
                    server.check_alive()
                    report.failed_jobs.append(f"round {n}: {type(exc).__name__}: {exc}")
            if n % every == 0 or n == max(cycles, jobs):
                sample = Sample(
                    **await _sample(server, client, kernel_ids, job_ids),
                    round=n,
                    kernels=min(n, cycles),
                    jobs=min(n, jobs),
                    start_median_s=median(since_start),
                    job_median_s=median(since_job),
                )
                report.samples.append(sample)
                report.start_seconds += since_start
                report.job_seconds += since_job
                since_start, since_job = [], []
                if progress:
                    print(row(sample), flush=True)
        await _final_checks(server, client, report, kernel_ids, job_ids, settle_seconds)
    finally:
        await asyncio.to_thread(_tear_down, server, client, kernel_ids, job_ids)
        report.seconds = time.monotonic() - began
    return report


def _tear_down(server: Server, client: Any, kernel_ids: set[str], job_ids: set[str]) -> None:
    """Stop the server; remove what it left (a soak leaves nothing, even when it failed)."""
    import docker

    server.stop()
    for name in our_containers(client, kernel_ids, job_ids):
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(name).remove(force=True)
    client.close()


async def _sample(
    server: Server, client: Any, kernel_ids: set[str], job_ids: set[str]
) -> dict[str, Any]:
    """What the server holds now (the fields of a :class:`Sample` that it tells)."""
    rss, fds, threads = process_sample(server.pid)
    containers = await asyncio.to_thread(our_containers, client, kernel_ids, job_ids)
    return {
        "rss_mib": round(rss, 1),
        "fds": fds,
        "threads": threads,
        "containers": len(containers),
        "runtime_entries": len(runtime_entries(server)),
        "kernel_folders": len(kernel_folders(server)),
        "store_entries": store_entries(server),
    }


async def _final_checks(
    server: Server,
    client: Any,
    report: Report,
    kernel_ids: set[str],
    job_ids: set[str],
    settle_seconds: float,
) -> None:
    """Leaks, once what ends in the background had time to (at most ``settle_seconds``)."""
    deadline = time.monotonic() + settle_seconds
    while True:
        report.leaked_containers = await asyncio.to_thread(
            our_containers, client, kernel_ids, job_ids
        )
        report.leaked_runtime_entries = runtime_entries(server, kernel_ids)
        report.leaked_kernel_folders = kernel_folders(server)
        report.store_entries = store_entries(server)
        status, body = await server.request("GET", f"{API}jobs")
        report.listed_jobs = len(body["jobs"]) if status == 200 else -1
        if report.samples:
            now = len(runtime_entries(server))
            report.runtime_growth = now - report.samples[0].runtime_entries
        clean = not report.leaked_containers and not report.leaked_runtime_entries
        clean = clean and not report.leaked_kernel_folders
        clean = clean and report.runtime_growth <= 0
        if (clean and report.store_bounded) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    samples = report.samples
    if samples:
        warm = samples[0]
        report.fd_growth = max(s.fds for s in samples) - warm.fds
        report.rss_growth_mib = round(samples[-1].rss_mib - warm.rss_mib, 1)
        measured = [s for s in samples if s.start_median_s == s.start_median_s]  # not NaN
        if len(measured) >= 2:
            report.latency_ratio = measured[-1].start_median_s / measured[0].start_median_s


# --------------------------------------------------------------------------- output

COLUMNS = ("round", "kernels", "jobs", "rss MiB", "fds", "threads", "start p50 s", "job p50 s")


def row(s: Sample) -> str:
    return (
        f"{s.round:>6} {s.kernels:>8} {s.jobs:>6} {s.rss_mib:>9.1f} {s.fds:>5} {s.threads:>8} "
        f"{s.start_median_s:>12.3f} {s.job_median_s:>10.3f}"
    )


def header() -> str:
    widths = (6, 8, 6, 9, 5, 8, 12, 10)
    return " ".join(f"{c:>{w}}" for c, w in zip(COLUMNS, widths, strict=True))


def write_csv(report: Report, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f.name for f in fields(Sample)])
        for sample in report.samples:
            writer.writerow(list(asdict(sample).values()))


def verdicts(report: Report) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for what the soak promises."""
    return [
        (
            "every kernel cycle succeeded",
            not report.failed_kernels,
            f"{len(report.failed_kernels)} failed"
            + "".join(f"\n      {why}" for why in report.failed_kernels[:5]),
        ),
        (
            "every job succeeded",
            not report.failed_jobs,
            f"{len(report.failed_jobs)} failed"
            + "".join(f"\n      {why}" for why in report.failed_jobs[:5]),
        ),
        (
            "no container left",
            not report.leaked_containers,
            ", ".join(report.leaked_containers) or "none",
        ),
        (
            "no kernel file or socket folder left in the runtime dir",
            not (report.leaked_runtime_entries or report.leaked_kernel_folders)
            and report.runtime_growth <= 0,
            f"{', '.join(report.leaked_runtime_entries) or 'none'} naming a kernel, "
            f"{len(report.leaked_kernel_folders)} socket folders; "
            f"{report.runtime_growth:+d} entries since the warm-up",
        ),
        (
            "job store within keep_finished",
            report.store_bounded,
            f"{report.store_entries} on disk, {report.listed_jobs} listed, "
            f"keep_finished {report.keep_finished}",
        ),
        ("fd growth after warm-up", report.fd_growth <= 8, f"{report.fd_growth:+d}"),
        (
            "start latency at the end within 10% of the start",
            report.latency_within_10_percent,
            f"ratio {report.latency_ratio:.3f}",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=500, help="kernel start/stop cycles")
    parser.add_argument("--jobs", type=int, default=500, help="jobs")
    parser.add_argument("--every", type=int, default=25, help="rounds between samples")
    parser.add_argument("--csv", type=Path, default=Path("soak.csv"), help="samples, as CSV")
    parser.add_argument("--json", type=Path, help="the whole report, as JSON")
    parser.add_argument("--keep-finished", type=int, default=20)
    parser.add_argument("--config-file", type=Path, help="default: a local Docker config")
    parser.add_argument("--config", default="local", help="the execution config to use")
    parser.add_argument("--image", default="default", help="its image (with no --config-file)")
    parser.add_argument("--folder", type=Path, help="keep the server's files here")
    args = parser.parse_args(argv)
    # stopped by SIGINT or SIGTERM (also when started in the background): clean up first
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="dss-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.cycles} kernel cycles, {args.jobs} jobs, a sample every {args.every}")
    print(f"load average at start: {os.getloadavg()}; files in {folder}")
    print(header(), flush=True)
    report = asyncio.run(
        soak(
            args.cycles,
            args.jobs,
            args.every,
            folder,
            config_file=args.config_file,
            config=args.config,
            image=args.image,
            keep_finished=args.keep_finished,
        )
    )
    print(f"load average at end: {os.getloadavg()}; {report.seconds:.0f} s in all")
    for what, seconds in (("kernel start", report.start_seconds), ("job", report.job_seconds)):
        if seconds:
            print(
                f"{what}: n={len(seconds)} median {median(seconds):.3f} s, "
                f"p95 {percentile(seconds, 95):.3f} s, max {max(seconds):.3f} s"
            )
    if report.samples:
        first, last = report.samples[0], report.samples[-1]
        print(f"server rss {first.rss_mib} -> {last.rss_mib} MiB, fds {first.fds} -> {last.fds}")
    for check, passed, detail in verdicts(report):
        print(f"  [{'ok' if passed else 'NO'}] {check}: {detail}")
    write_csv(report, args.csv)
    print(f"samples written to {args.csv}")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    if not args.folder:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(passed for _, passed, _ in verdicts(report)) else 1


if __name__ == "__main__":
    sys.exit(main())
