"""Image builds as the CLI shows them: a spinner with the latest line, one line per step.

The builders only emit :class:`~jupyter_dss_containers.images.BuildEvent` objects; this is
the terminal's way of showing them (the server and the tests use others).
"""

from __future__ import annotations

import time
from typing import Any

from .images.progress import BuildEvent


class ConsoleProgress:
    """Shows build events in a terminal: a spinner with the latest line, one line per step.

    ``verbose`` prints every log line as well (what ``--verbose`` in the CLI wants).
    """

    def __init__(self, console: Any = None, verbose: bool = False):
        from rich.console import Console  # here: the kernel provisioner never needs rich

        self.console = console if console is not None else Console(stderr=True)
        self.verbose = verbose
        self._status: Any = None
        self._step: tuple[str, str] | None = None
        self._started = time.monotonic()

    def __enter__(self) -> ConsoleProgress:
        self._status = self.console.status("starting", spinner="dots")
        self._status.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc_info)
            self._status = None

    def __call__(self, event: BuildEvent) -> None:
        from rich.markup import escape

        key = (event.image, event.step)
        if key != self._step or self.verbose or event.step in ("done", "cached"):
            self._step = key
            mark = "[green]✓[/]" if event.step in ("done", "cached") else "[cyan]•[/]"
            elapsed = time.monotonic() - self._started
            self.console.print(
                f"{mark} [bold]{escape(event.image)}[/] {escape(event.step)}: "
                f"{escape(event.message)} [dim]({elapsed:.0f} s)[/]",
                highlight=False,
            )
        if self._status is not None:
            percent = f" {event.progress:.0%}" if event.progress is not None else ""
            self._status.update(
                f"[bold]{escape(event.image)}[/] {escape(event.step)}{percent}: "
                f"{escape(event.message[:100])}"
            )
