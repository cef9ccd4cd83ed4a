"""The named phases of a start (kernel or job, any backend), and the history of one start.

A user waiting for a container wants to know what it waits for: its turn (per-user limits),
the scheduler, a node an autoscaler adds, an image pull, the container, the kernel's boot.
Each start keeps a :class:`PhaseHistory` (the phases it went through, the time spent in
each) on the process's :data:`BOARD`, keyed by kernel or job id; the backends report into it
as they learn (the Kubernetes watch from its thread), ``GET kernels`` / ``GET jobs``, the
sidebar and ``%%container`` read it, and a failed start quotes it in its error.

Pure bookkeeping: no I/O; one lock per history, since the watch thread writes.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import ownership

QUEUED = "queued"
SCHEDULING = "scheduling"
WAITING_FOR_NODE = "waiting-for-node"
PULLING = "pulling"
STARTING = "starting"
BOOTING = "booting"
READY = "ready"
FAILED = "failed"
#: every phase, in the order a start goes through them (any may be skipped)
ORDER = (QUEUED, SCHEDULING, WAITING_FOR_NODE, PULLING, STARTING, BOOTING, READY, FAILED)
#: the phases in words, as the sidebar and ``%%container`` print them
LABELS = {
    QUEUED: "queued",
    SCHEDULING: "scheduling",
    WAITING_FOR_NODE: "waiting for a new node",
    PULLING: "pulling image",
    STARTING: "starting container",
    BOOTING: "kernel booting",
    READY: "ready",
    FAILED: "failed",
}
FINAL = (READY, FAILED)
#: histories a process keeps (the oldest forgotten first): a bound on a long-lived server
KEEP = 1024


def format_bytes(n_bytes: int) -> str:
    """``70984068`` -> ``67.7 MiB``: an image's size in a phase message."""
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n_bytes} B"  # pragma: no cover


_PULLED = re.compile(
    r'^Successfully pulled image "([^"]+)" in ([0-9.]+m?s).*?Image size: (\d+) bytes'
)


def pulled_message(kubelet_message: str) -> str:
    """The kubelet's ``Pulled`` event in a phase's words: ``pulled image "x" (67.7 MiB) in
    3.2s``; other messages (``... already present on machine``) as they are."""
    found = _PULLED.match(kubelet_message)
    if found is None:
        return kubelet_message
    image, took, size = found.groups()
    return f'pulled image "{image}" ({format_bytes(int(size))}) in {took}'


@dataclass
class Step:
    """One phase of a start: since when (monotonic), until when (None while current)."""

    phase: str
    message: str
    began: float
    at: float  # wall-clock time it began (epoch seconds)
    ended: float | None = None

    def seconds(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.began


class PhaseHistory:
    """The phases one start went through. ``clock`` is monotonic, ``wall`` epoch seconds
    (both injectable so the model is testable without sleeping)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self.steps: list[Step] = []
        #: whose start it is, and what it starts (a kernel's name and config), once known
        self.owner: str | None = None
        self.about: dict[str, Any] = {}

    def enter(self, phase: str, message: str = "") -> None:
        """The start is now in ``phase`` (the same phase again only updates its message).
        Nothing moves a finished start (a late report from the watch thread)."""
        if phase not in LABELS:
            raise ValueError(f"unknown phase {phase!r}")
        with self._lock:
            last = self.steps[-1] if self.steps else None
            if last is not None and last.phase in FINAL:
                return
            if last is not None and last.phase == phase:
                last.message = message or last.message
                return
            now = self._clock()
            if last is not None:
                last.ended = now
            step = Step(phase, message, now, self._wall())
            if phase in FINAL:
                step.ended = now
            self.steps.append(step)

    def note(self, message: str) -> None:
        """A new message for the current phase (a pull's size once it is known)."""
        with self._lock:
            if self.steps and self.steps[-1].phase not in FINAL:
                self.steps[-1].message = message

    def fail(self, message: str) -> None:
        self.enter(FAILED, message)

    @property
    def current(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def done(self) -> bool:
        return bool(self.steps) and self.steps[-1].phase in FINAL

    def rows(self) -> list[dict[str, Any]]:
        """The history as JSON rows: phase, label, message, started (ISO 8601), seconds
        (so far, for the current one; 0 for the final one)."""
        now = self._clock()
        with self._lock:
            steps = list(self.steps)
        return [
            {
                "phase": s.phase,
                "label": LABELS[s.phase],
                "message": s.message,
                "started": datetime.fromtimestamp(s.at, tz=timezone.utc).isoformat(),
                "seconds": round(s.seconds(now), 3),
                "current": i == len(steps) - 1 and s.phase not in FINAL,
            }
            for i, s in enumerate(steps)
        ]

    def summary(self) -> str:
        """``queued 0.0 s, scheduling 0.1 s, pulling image 3.2 s, ready`` (the final phase
        without a time)."""
        return ", ".join(
            r["label"] if r["phase"] in FINAL else f"{r['label']} {r['seconds']:.1f} s"
            for r in self.rows()
        )

    def total(self) -> float:
        """Seconds from the first phase to the last (to now, while it goes on)."""
        with self._lock:
            if not self.steps:
                return 0.0
            end = self.steps[-1].ended if self.done else self._clock()
            return (end or self._clock()) - self.steps[0].began


def key_of(labels: dict[str, str], fallback: str = "") -> str:
    """The kernel or job id a workload's start is kept under (else ``fallback``)."""
    return labels.get(ownership.KERNEL_ID) or labels.get(ownership.JOB_ID) or fallback


class PhaseBoard:
    """The starts of this process, by kernel or job id (the newest :data:`KEEP`)."""

    def __init__(self, keep: int = KEEP):
        self._keep = keep
        self._lock = threading.Lock()
        self._histories: OrderedDict[str, PhaseHistory] = OrderedDict()

    def begin(self, key: str, phase: str = QUEUED, message: str = "") -> PhaseHistory:
        """A new start of ``key`` (a restart replaces the previous start's history)."""
        history = PhaseHistory()
        history.enter(phase, message)
        with self._lock:
            self._histories.pop(key, None)
            self._histories[key] = history
            while len(self._histories) > self._keep:
                self._histories.popitem(last=False)
        return history

    def get(self, key: str) -> PhaseHistory | None:
        with self._lock:
            return self._histories.get(key)

    def enter(self, key: str, phase: str, message: str = "") -> None:
        """Report a phase of ``key``'s start; nothing when this process does not follow it
        (a launcher creating for a server, a start that began elsewhere)."""
        history = self.get(key)
        if history is not None:
            history.enter(phase, message)

    def note(self, key: str, message: str) -> None:
        history = self.get(key)
        if history is not None:
            history.note(message)

    def claim(self, key: str, owner: str | None, **about: Any) -> None:
        """Say whose start ``key`` is (and what it starts): a kernel the server lists only
        once it started is shown to its owner meanwhile (:meth:`starts_of`)."""
        history = self.get(key)
        if history is not None:
            history.owner, history.about = owner, about

    def starts_of(self, owner: str) -> list[tuple[str, PhaseHistory]]:
        """The starts of ``owner`` still going on."""
        with self._lock:
            found = list(self._histories.items())
        return [(k, h) for k, h in found if h.owner == owner and not h.done]

    def forget(self, key: str) -> None:
        with self._lock:
            self._histories.pop(key, None)

    def fields(self, key: str) -> dict[str, Any]:
        """``phase``, ``phase_message`` and ``phases`` (the rows) of ``key``'s last start,
        for the REST answers (None and [] when this process has none)."""
        history = self.get(key)
        step = history.current if history is not None else None
        return {
            "phase": step.phase if step else None,
            "phase_message": step.message if step else None,
            "phases": history.rows() if history is not None else [],
        }

    def failed(self, key: str, message: str) -> str:
        """``message`` with the phases of ``key``'s start that failed (``; start phases:
        queued 0.0 s, ..., failed``), which is marked failed; unchanged for a start that had
        finished or that this process does not follow."""
        history = self.get(key)
        if history is None or history.done:
            return message
        head, newline, rest = message.partition("\n")
        history.fail(head[:300])
        return f"{head}; start phases: {history.summary()}{newline}{rest}"


#: the process's starts (the server's kernels and jobs, a kernel's own ``%%container`` jobs)
BOARD = PhaseBoard()
