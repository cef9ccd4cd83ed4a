"""Which pins a code env that mirrors a Python environment gets, and what it leaves out.

``mirror: true`` reads the distributions of the Python running this process (the server's,
or the CLI's: ``importlib.metadata``); ``mirror: PATH`` a ``requirements.txt`` or
``pip freeze`` file. Only exact pins (``name==version``) are mirrored: a mirror is about
the *same* versions on both sides of ``--in``/``--out``. Left out, each with its reason:

* ``excluded``: the server's own packages (:data:`SERVER_ONLY`, this package among them),
  packaging tools (:data:`PACKAGING_TOOLS`: the image's venv keeps its own), the env's
  ``exclude`` names, and, for the server's environment, what needs one of the server's
  packages (a server extension such as ``jupyter-resource-usage``);
* ``editable`` / ``local`` / ``url``: an editable install, a local folder or file, a VCS
  or other URL: nothing an index serves by name and version;
* ``unpinned``, ``invalid``, ``option``, ``duplicate``: lines of a file that name no single
  version (``requests>=2``), do not parse, are pip options (``-r``, ``--index-url``) or
  repeat a name.

Which of the pins have wheels for the image's Python and platform is learnt at build time
(:mod:`.mirrorwheels`). Parsing is cached by the file's bytes (the server's environment: by
its ``sys.path`` folders' times), so the kernel start path pays for it once per change.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from typing import Any

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import ReportedError

#: the server's own packages: a kernel or job never imports them (normalized names)
SERVER_ONLY = frozenset(
    {
        "jupyter-dss-containers",
        "jupyter-server",
        "jupyter-server-terminals",
        "jupyter-server-fileid",
        "jupyter-server-ydoc",
        "jupyter-collaboration",
        "jupyter-events",
        "jupyter-lsp",
        "jupyterlab",
        "jupyterlab-server",
        "notebook",
        "notebook-shim",
        "nbclassic",
        "jupyterhub",
        "terminado",
        "jupyter-builder",
        "hatch-jupyter-builder",
    }
)
#: the tools of the venv itself: the image keeps the ones its Python came with
PACKAGING_TOOLS = frozenset({"pip", "setuptools", "wheel", "distribute"})
EXCLUDED = SERVER_ONLY | PACKAGING_TOOLS
#: a mirror file larger than this is refused (a freeze of 1,000 packages is ~30 KiB)
MAX_FILE_BYTES = 1024 * 1024
SERVER = "the server's environment"

__all__ = [
    "EXCLUDED",
    "MAX_FILE_BYTES",
    "PACKAGING_TOOLS",
    "SERVER",
    "SERVER_ONLY",
    "MirrorFileError",
    "MirrorPlan",
    "Unmirrored",
    "excluded_names",
    "parse_requirements",
    "read_mirror",
    "requirement_name",
    "server_plan",
]


class MirrorFileError(ReportedError, ValueError):
    """A mirror file that cannot be used (missing, unreadable, too large)."""

    status = 400


@dataclass(frozen=True)
class Unmirrored:
    """One package (or line) a mirror leaves out, and why."""

    requirement: str  # as written: the file's line, or ``name==version`` of a distribution
    reason: str  # excluded, editable, local, url, unpinned, invalid, option, duplicate,
    # overridden, marker, no-wheel, download-failed
    detail: str
    name: str | None = None  # the normalized name, when there is one

    def as_dict(self) -> dict[str, Any]:
        return {
            "requirement": self.requirement,
            "name": self.name,
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unmirrored:
        return cls(
            str(data.get("requirement", "")),
            str(data.get("reason", "")),
            str(data.get("detail", "")),
            data.get("name"),
        )


@dataclass(frozen=True)
class MirrorPlan:
    """The pins a mirror asks for (``name[extras]==version[; marker]``, sorted by name) and
    what it leaves out before any wheel is looked for."""

    source: str
    pins: tuple[str, ...]
    skipped: tuple[Unmirrored, ...]


def requirement_name(requirement: str) -> str:
    """The normalized project name of a PEP 508 requirement (``Foo_Bar[x]>=1`` ->
    ``foo-bar``), as every part of the mirror compares names; ``InvalidRequirement`` when
    the text is not one (pure)."""
    return canonicalize_name(Requirement(requirement).name)


def excluded_names(extra: Iterable[str] = ()) -> frozenset[str]:
    """The built-in exclusions plus an env's own ``exclude`` names, normalized."""
    return EXCLUDED | {canonicalize_name(n) for n in extra}


def read_mirror(mirror: bool | str, exclude: Iterable[str] = ()) -> MirrorPlan:
    """The plan of ``mirror: true`` (this process's environment) or ``mirror: PATH``.

    A file that cannot be read raises :class:`MirrorFileError` naming it.
    """
    excluded = tuple(sorted(excluded_names(exclude)))
    if mirror is True:
        return _server_plan_cached(_path_stamp(sys.path), excluded)
    path = str(mirror)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise MirrorFileError(f"cannot read the mirror file {path}: {exc.strerror}") from None
    except ValueError:  # a NUL in the path
        raise MirrorFileError(f"cannot read the mirror file {path!r}: not a path") from None
    if len(data) > MAX_FILE_BYTES:
        raise MirrorFileError(f"the mirror file {path} is larger than {MAX_FILE_BYTES} bytes")
    return _file_plan_cached(data, path, excluded)


@lru_cache(maxsize=16)
def _file_plan_cached(data: bytes, path: str, excluded: tuple[str, ...]) -> MirrorPlan:
    """Keyed by the file's bytes: reading a small file is cheap, parsing it less so."""
    return parse_requirements(data.decode("utf-8", errors="replace"), path, excluded)


@lru_cache(maxsize=8)
def _server_plan_cached(
    stamp: tuple[tuple[str, int], ...], excluded: tuple[str, ...]
) -> MirrorPlan:
    return server_plan(excluded, [p for p, _ in stamp])


def _path_stamp(path: list[str]) -> tuple[tuple[str, int], ...]:
    """The folders of ``sys.path`` and their modification times: installing or removing a
    distribution adds or removes a ``.dist-info`` folder, which changes its folder's time."""
    out = []
    for entry in path:
        folder = os.path.abspath(entry or ".")
        try:
            out.append((folder, os.stat(folder).st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


# --------------------------------------------------------------------------- files


def parse_requirements(text: str, source: str, excluded: Iterable[str] = EXCLUDED) -> MirrorPlan:
    """The plan of a requirements / freeze file's text (pure)."""
    excluded = frozenset(excluded)
    pins: dict[str, str] = {}
    skipped: list[Unmirrored] = []
    for line in _logical_lines(text):
        pin, left_out = _classify_line(line, excluded)
        if left_out is not None:
            skipped.append(left_out)
            continue
        name = requirement_name(pin)
        if name in pins:
            skipped.append(Unmirrored(line, "duplicate", f"{name} is pinned earlier", name))
            continue
        pins[name] = pin
    return MirrorPlan(source, tuple(pins[n] for n in sorted(pins)), tuple(skipped))


def _logical_lines(text: str) -> list[str]:
    """Lines without comments and blank ones, ``\\`` continuations joined."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw if raw.lstrip().startswith("#") else _strip_comment(raw)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def _strip_comment(line: str) -> str:
    for i, char in enumerate(line):
        if char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


_LOCAL_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


def _classify_line(line: str, excluded: frozenset[str]) -> tuple[str, Unmirrored | None]:
    """``(pin, None)`` for a mirrored line, else ``("", why it is not)``."""
    if line.startswith(("-e ", "-e\t", "--editable")):
        return "", Unmirrored(line, "editable", "an editable install (-e): not on any index")
    if line.startswith("-"):
        return "", Unmirrored(line, "option", "a pip option, not a package")
    spec = " ".join(t for t in line.split() if not t.startswith("--hash"))
    named_url = " @ " in spec or (spec.count("@") == 1 and "://" in spec.split("@")[1])
    if not named_url and spec.startswith("file:"):
        return "", Unmirrored(line, "local", "a local file: not on any index")
    if not named_url and ("://" in spec or spec.startswith(("git+", "hg+", "svn+", "bzr+"))):
        return "", Unmirrored(line, "url", "a URL: not a version an index serves")
    if not named_url and (
        spec.startswith((".", "/", "~")) or spec.split(";")[0].strip().endswith(_LOCAL_SUFFIXES)
    ):
        return "", Unmirrored(line, "local", "a local folder or file: not on any index")
    try:
        req = Requirement(spec)
    except InvalidRequirement as exc:
        why = str(exc).splitlines()[0]
        return "", Unmirrored(line, "invalid", f"not a requirement: {why}")
    name = canonicalize_name(req.name)
    if req.url:
        kind = "local" if req.url.startswith("file:") else "url"
        return "", Unmirrored(line, kind, f"{req.url}: not a version an index serves", name)
    if name in excluded:
        return "", Unmirrored(line, "excluded", _why_excluded(name), name)
    specifiers = list(req.specifier)
    exact = (
        len(specifiers) == 1
        and specifiers[0].operator in ("==", "===")
        and "*" not in specifiers[0].version
    )
    if not exact:
        return "", Unmirrored(
            line, "unpinned", "names no single version (a mirror pins name==version)", name
        )
    return _pin(name, req.extras, specifiers[0].version, req.marker), None


def _pin(name: str, extras: Iterable[str], version: str, marker: Marker | None) -> str:
    extra = f"[{','.join(sorted(extras))}]" if extras else ""
    return f"{name}{extra}=={version}" + (f"; {marker}" if marker else "")


def _why_excluded(name: str, needs: str | None = None) -> str:
    if needs:
        return f"needs {needs}, one of the server's own packages"
    if name in SERVER_ONLY:
        return "one of the server's own packages"
    if name in PACKAGING_TOOLS:
        return "a packaging tool: the image's venv keeps its own"
    return "named in the env's exclude list"


# --------------------------------------------------------------------------- the server


def server_plan(excluded: Iterable[str] = EXCLUDED, path: list[str] | None = None) -> MirrorPlan:
    """The plan of the distributions installed on ``path`` (default ``sys.path``)."""
    excluded = frozenset(excluded)
    where = f"{SERVER} ({sys.executable})"
    seen: dict[str, tuple[metadata.Distribution, str, list[str]]] = {}
    for dist in metadata.distributions(path=path if path is not None else sys.path):
        meta = dist.metadata  # parsed once: each access parses the file again
        name = canonicalize_name(meta["Name"] or "")
        if name and name not in seen:  # the first on the path is the one imported
            seen[name] = (dist, meta["Version"] or "", meta.get_all("Requires-Dist") or [])
    needs = _needs_server({n: r for n, (_, _, r) in seen.items()}, SERVER_ONLY & excluded)
    pins: list[str] = []
    skipped: list[Unmirrored] = []
    for name in sorted(seen):
        dist, version, _ = seen[name]
        pin = f"{name}=={version}"
        if name in excluded or name in needs:
            skipped.append(Unmirrored(pin, "excluded", _why_excluded(name, needs.get(name)), name))
            continue
        origin = _origin(dist)
        if origin is not None:
            reason, detail = origin
            skipped.append(Unmirrored(pin, reason, detail, name))
            continue
        pins.append(pin)
    return MirrorPlan(where, tuple(pins), tuple(skipped))


def _origin(dist: metadata.Distribution) -> tuple[str, str] | None:
    """Why a distribution installed from somewhere else than an index cannot be mirrored."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        return None
    if not isinstance(direct, dict):
        return None
    url = str(direct.get("url", ""))
    if isinstance(direct.get("dir_info"), dict):
        if direct["dir_info"].get("editable"):
            return "editable", f"an editable install of {url}: not on any index"
        return "local", f"installed from the folder {url}: not on any index"
    if "vcs_info" in direct:
        return "url", f"installed from {direct['vcs_info'].get('vcs', 'VCS')} {url}"
    if url.startswith("file:"):
        return "local", f"installed from the file {url}: not on any index"
    return "url", f"installed from {url}: not a version an index serves"


_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _needs_server(requires: dict[str, list[str]], server: frozenset[str]) -> dict[str, str]:
    """Distributions that need one of ``server`` (directly or through another such one),
    each with the server package it needs; requirements of optional extras do not count.
    Walks the reverse edges from the server's packages, parsing only the edges it follows."""
    users: dict[str, list[tuple[str, str]]] = {}
    for name, texts in requires.items():
        for text in texts:
            found = _NAME.match(text)
            if found:
                users.setdefault(canonicalize_name(found.group(1)), []).append((name, text))
    needs: dict[str, str] = {}
    queue = sorted(server)
    while queue:
        target = queue.pop(0)
        for user, text in users.get(target, ()):
            if user in needs or user in server or not _required_always(text):
                continue
            needs[user] = target if target in server else needs[target]
            queue.append(user)
    return needs


def _required_always(text: str) -> bool:
    """Whether a ``Requires-Dist`` holds when no extra is asked for (on this Python)."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return False
    if req.marker is None:
        return True
    try:
        return req.marker.evaluate({"extra": ""})
    except Exception:  # an unknown marker variable: count the requirement
        return True
