"""Starts in progress on one backend: each one's phase and message (what ``GET kernels``
shows while a pod waits for a node), and how long a finished start waited for a node (not
the kernel's time: :func:`...kernelstart.start_cold` does not count it against
``launch_timeout``).

Keyed by the kernel or job id of the workload's labels (else the pod name); written from
the watch thread, read on the event loop (single dict operations).
"""

from __future__ import annotations

from collections.abc import Callable

from ... import ownership


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
        return lambda phase, message: self.phases.__setitem__(key, (phase, message))

    def done(self, key: str, node_waited: float | None = None) -> None:
        self.phases.pop(key, None)
        if node_waited:
            self.node_waited[key] = node_waited
