"""Run Jupyter kernels, recipes and model jobs inside containers from execution configurations."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import DSSContainersExtension

    return [{"module": "jupyter_dss_containers", "app": DSSContainersExtension}]
