"""Former home of the code-env recipe: now :mod:`jupyter_dss_containers.images.envrecipe`.
Kept so that ``from jupyter_dss_containers.envrecipe import ...`` goes on working (README
changelog); the package and its tests import the real module."""

from __future__ import annotations

from .images.envrecipe import *  # noqa: F403  (the re-export is the point)
from .images.envrecipe import __all__ as __all__
