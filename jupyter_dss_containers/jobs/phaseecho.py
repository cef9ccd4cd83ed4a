"""A ``%%container`` cell (or :func:`..jobs.wait`) printing its job's start phases while it
waits: one stderr line per phase as it is entered, then ``ready after 3.4 s (queued 0.0 s,
pulling image 3.1 s, ...)``. A start quicker than :data:`SHOW_AFTER` prints nothing (most
local starts: the cell's output stays the job's own); a failed one always shows its phases
in the error it raises.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .. import phases

#: seconds a start may take before the cell starts telling its phases
SHOW_AFTER = 1.0
PREFIX = "dss-containers: "


class PhaseEcho:
    """Call it from the waiting loop: prints what is new in the job's start."""

    def __init__(self, job_id: str, out: TextIO | None = None, show_after: float = SHOW_AFTER):
        self.job_id, self.out, self.show_after = job_id, out, show_after
        self.printed = 0
        self.showing = False
        self.finished = False

    def __call__(self) -> None:
        history = phases.BOARD.get(self.job_id)
        if history is None or self.finished:
            return
        if not self.showing:
            if history.total() < self.show_after:
                self.finished = history.done  # done quickly: nothing to tell
                return
            self.showing = True
        out = self.out or sys.stderr
        rows = history.rows()
        for row in rows[self.printed :]:
            if row["phase"] == phases.READY:
                out.write(f"{PREFIX}ready after {history.total():.1f} s ({history.summary()})\n")
            elif row["phase"] != phases.FAILED:  # a failure: the error says it, with phases
                message = f": {row['message']}" if row["message"] else ""
                out.write(f"{PREFIX}{row['label']}{message}\n")
        self.printed = len(rows)
        self.finished = history.done
        out.flush()
