"""A build's progress: events for a terminal, a log or the server's UI, and the log tail
that a failure's message ends with.

The console rendering lives on the CLI side (:mod:`jupyter_dss_containers.cli_progress`):
nothing here needs a terminal.
"""

from __future__ import annotations

import os
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

LOG_TAIL = 20


class ImageBuildError(RuntimeError):
    """An image could not be built; the message ends with the build log's tail."""


@dataclass
class BuildEvent:
    """One progress step of a build, for a terminal, a log or the server's UI."""

    image: str
    step: str
    message: str
    progress: float | None = None


ProgressSink = Callable[[BuildEvent], None]


@dataclass
class BuildRun:
    """One build in progress: where its events go and the log tail for error messages."""

    image: str
    sink: ProgressSink | None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))
    kind: str = "base image"

    def emit(self, step: str, message: str, progress: float | None = None) -> None:
        if self.sink is not None:
            self.sink(BuildEvent(self.image, step, message, progress))

    def log(self, step: str, line: str, progress: float | None = None) -> None:
        """A build-log line: kept for the error message and shown as an event."""
        line = line.rstrip()
        if line:
            self.tail.append(line)
            self.emit(step, line, progress)

    def fail(self, what: str) -> ImageBuildError:
        tail = "".join(f"\n{line}" for line in self.tail)
        return ImageBuildError(f"building {self.kind} {self.image!r} failed: {what}{tail}")


def stream_process(
    cmd: list[str],
    run: BuildRun,
    step: str,
    progress_of: Callable[[str], float | None] = lambda _line: None,
) -> int:
    """Run a command, turning each output line into an event; return its exit code."""
    progress: float | None = None
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress = progress_of(line) or progress
            run.log(step, line, progress)
        return proc.wait()
