"""Plugin recipes: callables that packages register under the entry-point group
``jupyter_dss_containers.recipes``, run in a container by name with parameters.

The plugin's top-level package is shipped into the job folder (``lib/``, first on
``sys.path`` there), so the image needs no install of it.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from ..imagecontract import JOB_FOLDER
from .model import JobError, JobRequest

GROUP = "jupyter_dss_containers.recipes"
LIB_DIR = f"{JOB_FOLDER}/lib"
SKIP = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache"}


def available() -> dict[str, EntryPoint]:
    """Recipes installed in this environment, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def recipe_request(
    config: str, name: str, params: dict | None = None, code_env: str | None = None
) -> JobRequest:
    """The job request that runs recipe ``name`` with ``params`` in ``config``."""
    found = available()
    if name not in found:
        known = ", ".join(sorted(found)) or "none installed"
        raise JobError(f"no recipe {name!r} in entry-point group {GROUP} ({known})")
    ep = found[name]
    return JobRequest(
        config=config,
        kind="recipe",
        code_env=code_env,
        operation={"module": ep.module, "attr": ep.attr or "", "params": dict(params or {})},
        files=package_files(ep.module.split(".")[0]),
        name=f"recipe:{name}",
    )


def package_files(top_level: str) -> dict[str, bytes]:
    """The sources of an importable top-level package or module, as job files."""
    spec = importlib.util.find_spec(top_level)
    if spec is None or spec.origin is None:
        raise JobError(f"recipe package {top_level!r} is not importable here")
    if spec.submodule_search_locations:
        root = Path(next(iter(spec.submodule_search_locations)))
        files = {}
        for path in root.rglob("*"):
            if path.is_file() and not SKIP.intersection(path.relative_to(root).parts):
                rel = path.relative_to(root.parent).as_posix()
                files[f"{LIB_DIR}/{rel}"] = path.read_bytes()
        return files
    origin = Path(spec.origin)
    return {f"{LIB_DIR}/{origin.name}": origin.read_bytes()}
