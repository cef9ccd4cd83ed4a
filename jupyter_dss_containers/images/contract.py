"""The image contract under its former name in this package: its one home is
:mod:`jupyter_dss_containers.imagecontract` (a leaf the config and the workspace planner
can read without loading this package); the builders import it from there."""

from __future__ import annotations

from ..imagecontract import *  # noqa: F403  (the re-export is the point)
from ..imagecontract import __all__ as __all__
