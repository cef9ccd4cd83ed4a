"""Run Jupyter kernels, recipes and model jobs inside containers from execution configurations."""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = ["__version__"]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_dss_containers``: the ``%%container`` magics."""
    from .magics import load_ipython_extension as load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The built sidebar, for ``jupyter labextension develop`` (wheels ship it as shared data)."""
    return [{"src": "labextension", "dest": "jupyter-dss-containers"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .server.app import DSSContainersExtension

    return [{"module": "jupyter_dss_containers", "app": DSSContainersExtension}]
