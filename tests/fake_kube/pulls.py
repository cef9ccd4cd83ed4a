"""Image pulls that take time, a knob a test turns per image (``cluster.kubelet.pulls``).

An image a test holds is "not on the node yet": the kubelet pulls it (the image is on the
local engine already; the pull is a wait) and writes what a real kubelet writes (its image
manager's events, source ``kubelet``): ``Pulling`` ``Pulling image "x"``, then, after
``delay`` seconds or once the test sets ``release``, ``Pulled`` ``Successfully pulled image
"x" in 2.5s (2.5s including waiting). Image size: 70984068 bytes.`` (kubelet >= 1.29; the
size is the local image's). A pull policy of ``Never`` pulls nothing (ErrImageNeverPull
stays the kubelet's answer); images no test holds are used as they are, without events,
as the fake always did.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import events
from .store import Store

COMPONENT = "kubelet"


@dataclass
class Hold:
    delay: float = 0.0
    release: threading.Event | None = None


class ImagePulls:
    """The images whose pull takes time (image reference -> how long)."""

    def __init__(self) -> None:
        self.held: dict[str, Hold] = {}

    def hold(self, image: str, delay: float = 0.0, release: threading.Event | None = None):
        """Pulls of ``image`` take ``delay`` seconds, or until ``release`` is set."""
        self.held[image] = Hold(delay, release)

    def clear(self) -> None:
        self.held.clear()

    async def pull(self, store: Store, pod: dict[str, Any], c: dict[str, Any], size: int) -> None:
        """Pull the container's image if a test holds it (Events as the kubelet writes)."""
        image = c["image"]
        hold = self.held.get(image)
        if hold is None or c.get("imagePullPolicy", "IfNotPresent") == "Never":
            return
        await events.record(store, pod, "Pulling", f'Pulling image "{image}"', COMPONENT)
        began = time.monotonic()
        if hold.release is not None:
            await asyncio.to_thread(hold.release.wait, 600)
        await asyncio.sleep(max(0.0, hold.delay - (time.monotonic() - began)))
        took = f"{time.monotonic() - began:.3f}s"
        message = (
            f'Successfully pulled image "{image}" in {took} ({took} including waiting). '
            f"Image size: {size} bytes."
        )
        await events.record(store, pod, "Pulled", message, COMPONENT)
