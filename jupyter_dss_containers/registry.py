"""Former home of registry pushes and pulls: now :mod:`jupyter_dss_containers.images.registry`.
Kept so that ``from jupyter_dss_containers import registry`` goes on working."""

from __future__ import annotations

from .images.registry import (
    PushResult,
    RegistryError,
    StatusSink,
    pull_image,
    push_image,
    qualified,
    split_ref,
)

__all__ = [
    "PushResult",
    "RegistryError",
    "StatusSink",
    "pull_image",
    "push_image",
    "qualified",
    "split_ref",
]
