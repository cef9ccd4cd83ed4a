"""Starts in progress on one backend: each one's phase and message (what ``GET kernels``
shows while a pod waits for a node), and how long a finished start waited for a node (not
the kernel's time: :func:`...kernelstart.start_cold` does not count it against
``launch_timeout``).

Keyed by the kernel or job id of the workload's labels (else the pod name); written from
the watch thread, read on the event loop (single dict operations). Each report also goes to
the process's start history (:data:`...phases.BOARD`), except the watch's ``running``: what
follows it (the kernel's boot, a job's run) is the caller's to say.
"""

from __future__ import annotations

from collections.abc import Callable

from ... import ownership, phases


def progress_key(labels: dict[str, str], name: str) -> str:
    """The kernel or job id a start's progress is kept under (else the pod's name)."""
    return labels.get(ownership.KERNEL_ID) or labels.get(ownership.JOB_ID) or name


class StartProgress:
    """Phases of the starts in progress, and the node waits of finished ones."""

    def __init__(self) -> None:
        self.phases: dict[str, tuple[str, str]] = {}
        self.node_waited: dict[str, float] = {}

    def reporter(self, key: str) -> Callable[[str, str], None]:
        """The watch's ``progress`` callback for the start of ``key``."""
        self.phases[key] = ("scheduling", "waiting for the scheduler")
        phases.BOARD.enter(key, phases.SCHEDULING, "waiting for the scheduler")

        def report(phase: str, message: str) -> None:
            if phase != "pulled":
                self.phases[key] = (phase, message)
            if phase == "pulled":  # the pull's size and time, kept on the pulling phase
                phases.BOARD.note(key, message)
            elif phase in phases.LABELS:
                phases.BOARD.enter(key, phase, message)

        return report

    def done(self, key: str, node_waited: float | None = None) -> None:
        self.phases.pop(key, None)
        if node_waited:
            self.node_waited[key] = node_waited
