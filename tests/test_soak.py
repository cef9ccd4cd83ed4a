"""A short soak (``benchmarks/soak.py``): one real Jupyter server, 20 kernel start/stop
cycles over REST and the websocket, 20 jobs over the REST API; nothing may leak."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import soak

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROUNDS, EVERY, KEEP_FINISHED = 20, 5, 5
FD_SLACK = 10  # fds a warm server may still open (pooled connections, a new worker thread)


async def test_a_short_soak_leaks_nothing(tmp_path, base_image) -> None:
    """After the first sample (the warm-up), kernel and job cycles leave no container, no
    connection file or socket folder in the runtime dir, no more job-store entries than
    ``keep_finished`` (on disk and listed), and open fds grow by a small constant at most
    (guards: a kernel or job container not removed, a connection file or ipc folder left
    per kernel, a store that keeps every finished job, a socket or file opened per cycle
    and never closed). Durations are printed, not asserted."""
    report = await soak.soak(
        cycles=ROUNDS,
        jobs=ROUNDS,
        every=EVERY,
        folder=tmp_path,
        keep_finished=KEEP_FINISHED,
        progress=False,
    )
    print("\n" + soak.header())
    for sample in report.samples:
        print(soak.row(sample))
    for check, passed, detail in soak.verdicts(report):
        print(f"  [{'ok' if passed else 'NO'}] {check}: {detail}")
    assert len(report.samples) == ROUNDS // EVERY
    assert len(report.start_seconds) == ROUNDS and len(report.job_seconds) == ROUNDS
    assert report.failed_kernels == [] and report.failed_jobs == []
    assert report.leaked_containers == []
    assert report.leaked_runtime_entries == [] and report.runtime_growth <= 0
    assert report.leaked_kernel_folders == []
    assert max(s.kernel_folders for s in report.samples) == 0
    assert report.store_entries <= KEEP_FINISHED and report.listed_jobs <= KEEP_FINISHED
    assert report.store_entries == KEEP_FINISHED  # the store is in use, and trimmed
    assert report.fd_growth <= FD_SLACK, [s.fds for s in report.samples]
