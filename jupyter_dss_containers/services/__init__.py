"""Trained models served as scoring APIs in containers (model services).

:mod:`.client` is what kernels and scripts call (:func:`deploy`, ...), through the server's
REST API; :mod:`.spec` and :mod:`.engine` build and run the containers on Docker;
:mod:`.runtime`, :mod:`.router` and :mod:`.protocol` run inside them (standard library,
plus the model's own libraries for the runtime).
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_version", "deploy", "logs", "service", "services", "set_traffic", "undeploy"]


def __getattr__(name: str) -> Any:
    """The client functions, imported on first use (the container side needs none of it)."""
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
