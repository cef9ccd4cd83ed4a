"""Faults a test arms on a fake cluster (``cluster.faults``): answer an HTTP error to the
next N requests of a resource and verb, drop a watch connection after N events, answer a
watch with 410 Gone (an ERROR event in the stream, as a real API server does, or the HTTP
status).

Every route can fail: the namespaced kinds (``pods``, ``secrets``, ...: get, list, watch,
create, patch, delete), ``namespaces`` (get, list, create, patch), ``version`` (get),
``selfsubjectaccessreviews`` (create), ``pods/log`` (get) and ``podmetrics`` (get). A 403
is worded as RBAC words it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

VERBS = ("get", "list", "watch", "create", "patch", "delete")


@dataclass
class Faults:
    """Faults armed by a test, each used up as requests hit it (thread-safe)."""

    #: (kind, verb) -> [how many more requests fail, with which HTTP status]
    failing: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: kind -> events each of the next watches sends before its connection drops
    drops: dict[str, list[int]] = field(default_factory=dict)
    #: kind -> how the next watches end at once: "event" (ERROR 410) or "http" (410)
    gone: dict[str, list[str]] = field(default_factory=dict)
    #: what was injected, in order: (fault, kind, verb)
    injected: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, kind: str, verb: str = "any", times: int = 1, status: int = 500) -> None:
        """The next ``times`` requests for ``kind`` (``verb``: one of VERBS or "any") fail."""
        with self.lock:
            self.failing[(kind, verb)] = [times, status]

    def drop_watch(self, kind: str, after_events: int = 1, times: int = 1) -> None:
        with self.lock:
            self.drops.setdefault(kind, []).extend([after_events] * times)

    def expire_watch(self, kind: str, how: str = "event", times: int = 1) -> None:
        with self.lock:
            self.gone.setdefault(kind, []).extend([how] * times)

    def clear(self) -> None:
        with self.lock:
            self.failing.clear()
            self.drops.clear()
            self.gone.clear()
            self.injected.clear()

    def failure(self, kind: str, verb: str) -> int | None:
        """The status to fail this request with, if a fault says so."""
        with self.lock:
            for key in ((kind, verb), (kind, "any")):
                armed = self.failing.get(key)
                if armed and armed[0] > 0:
                    armed[0] -= 1
                    self.injected.append((f"http-{armed[1]}", kind, verb))
                    return armed[1]
        return None

    def take(self, table: dict[str, list[Any]], kind: str, name: str) -> Any:
        with self.lock:
            if table.get(kind):
                self.injected.append((name, kind, "watch"))
                return table[kind].pop(0)
        return None
