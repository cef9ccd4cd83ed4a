"""A fake cluster-autoscaler, off unless a test turns it on (``cluster.autoscaler``).

Its node groups each make nodes with given labels, up to a maximum. For a pod the fake
scheduler could not place for lack of a node matching its node selector, it writes what
the real cluster-autoscaler writes (in its words, ``core/scaleup`` event processor):
``TriggeredScaleUp`` ``pod triggered scale-up: [{pool-gpu 0->1 (max: 3)}]`` and, after
``delay`` seconds, adds the node (the scheduler then binds the pod); or
``NotTriggerScaleUp`` ``pod didn't trigger scale-up: 2 node(s) didn't match Pod's node
affinity/selector`` when no group's nodes would fit (or ``1 max node group size
reached``). Both are ``Normal`` events from source ``cluster-autoscaler``.

One difference from the real one, on purpose: the verdict is written before the pod's
``Unschedulable`` condition (a real autoscaler answers on its next scan, ~10 s later).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from . import events
from .store import Store

COMPONENT = "cluster-autoscaler"


@dataclass
class NodeGroup:
    """Nodes with ``labels`` (``kubernetes.io/hostname`` added per node), up to ``max_size``."""

    name: str
    labels: dict[str, str]
    max_size: int = 3
    size: int = 0

    def fits(self, selector: dict[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


@dataclass
class Autoscaler:
    """Switchable per test: ``enabled``, ``groups`` and ``delay`` (seconds to a new node)."""

    enabled: bool = False
    groups: list[NodeGroup] = field(default_factory=list)
    delay: float = 1.0
    #: when set, a new node also waits for this (a test that must see the wait happen)
    release: threading.Event | None = None

    def turn_on(
        self, *groups: NodeGroup, delay: float = 1.0, release: threading.Event | None = None
    ) -> None:
        self.groups, self.delay, self.release, self.enabled = list(groups), delay, release, True

    def turn_off(self) -> None:
        self.enabled, self.groups, self.release = False, [], None

    async def scale_up(self, store: Store, pod: dict[str, Any]) -> NodeGroup | None:
        """Write the verdict on an unschedulable pod; the group that grows, or None."""
        selector = pod["spec"].get("nodeSelector") or {}
        fitting = [g for g in self.groups if g.fits(selector)]
        growing = next((g for g in fitting if g.size < g.max_size), None)
        if growing is None:
            if fitting:
                reason = f"{len(fitting)} max node group size reached"
            else:
                reason = f"{len(self.groups)} node(s) didn't match Pod's node affinity/selector"
            message = f"pod didn't trigger scale-up: {reason}"
            await events.record(store, pod, "NotTriggerScaleUp", message, COMPONENT)
            return None
        info = f"{{{growing.name} {growing.size}->{growing.size + 1} (max: {growing.max_size})}}"
        message = f"pod triggered scale-up: [{info}]"
        await events.record(store, pod, "TriggeredScaleUp", message, COMPONENT)
        growing.size += 1
        return growing

    async def new_node(self, group: NodeGroup) -> dict[str, str]:
        """The labels of the group's new node, once it is there (after ``delay``)."""
        await asyncio.sleep(self.delay)
        if self.release is not None:
            await asyncio.to_thread(self.release.wait, 120)
        return {**group.labels, "kubernetes.io/hostname": f"{group.name}-{group.size}"}
