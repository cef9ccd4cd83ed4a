"""The wheels of a mirror: the pinned versions that have a wheel for the image's Python and
platform, and the dependencies the pins do not name.

1. The pins, exactly: one ``pip download --only-binary=:all: --no-deps`` of the whole set
   (cached like every wheelhouse). When pip names a pin it finds no wheel for, that pin is
   set aside and the rest is tried again; when a failure cannot be pinned on one entry,
   each pin is downloaded on its own (each cached). One missing wheel never fails the set.
2. Their dependencies: the ``Requires-Dist`` of the downloaded wheels (markers evaluated for
   the image's Python, extras followed) that no downloaded pin provides, downloaded the same
   way, round after round, each name at the newest version that fits every requirement on
   it. A pin whose dependency has no wheel is left out too, naming it.

Nothing is resolved against anything else: the image gets the pins *as they are* (a source
environment whose pins conflict, as real ones do, is mirrored with its conflict, and
``pip check`` in the build log says so). Pins whose marker is false for the image's Python
are left out first. Failures are never cached: a wheel published later is found by the next
build.
"""

from __future__ import annotations

import email.parser
import platform
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .mirror import Unmirrored, requirement_name
from .progress import BuildRun
from .wheels import WHEEL_SUFFIXES, try_cached_wheels

#: how often a set is tried again after setting aside an entry pip named
WHOLE_SET_TRIES = 8
#: how deep the dependencies of the pins are followed
DEPENDENCY_ROUNDS = 12
#: how many of the versions that do have a wheel a reason names (the newest)
SHOWN_VERSIONS = 5
_NOT_FOUND = re.compile(
    r"Could not find a version that satisfies the requirement (\S+)"
    r"(?: \(from (?!versions:)([^)]+)\))?(?: \(from versions: ([^)]*)\))?"
)
_IGNORED_PYTHON = "Ignored the following versions that require a different python version:"
_WRONG_PYTHON = re.compile(r"Package '([^']+)' requires a different Python: \S+ not in '([^']+)'")

Download = Callable[[list[str]], tuple[Path | None, list[str]]]


@dataclass(frozen=True)
class MirrorWheels:
    """What a mirroring build installs (exact wheel files, no resolution) and leaves out."""

    files: tuple[Path, ...]  # the pins' wheels, then their dependencies'
    pins: tuple[str, ...]  # the pins that are installed
    dependencies: tuple[str, ...]  # ``name==version`` of the dependencies added
    failed: tuple[Unmirrored, ...]


@dataclass(frozen=True)
class _Wheel:
    name: str
    version: str
    path: Path
    requires: tuple[Requirement, ...]


def marker_environment(python: str, arch: str | None = None) -> dict[str, str]:
    """PEP 508 marker values of the image's CPython on Linux."""
    return {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": arch or platform.machine(),
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def target_words(python: str, glibc: str, arch: str | None = None) -> str:
    """``cp311 manylinux (glibc 2.36) x86_64``: the platform a wheel must fit, in words."""
    return f"cp{python.replace('.', '')} manylinux (glibc {glibc}) {arch or platform.machine()}"


def mirror_wheels(
    pins: tuple[str, ...] | list[str],
    python: str,
    glibc: str,
    run: BuildRun,
    wheelhouse: Path | None = None,
) -> MirrorWheels:
    """The wheels of ``pins`` and of their dependencies for the image (from the index, or
    only from ``wheelhouse`` when one is given); what has none is returned as left out."""
    options: tuple[str, ...] = ("--no-deps",)
    key: object = None
    if wheelhouse is not None:
        options += ("--no-index", "--find-links", str(wheelhouse))
        names = sorted(p.name for p in wheelhouse.iterdir() if p.name.endswith(WHEEL_SUFFIXES))
        key = {"options": list(options[:2]), "wheelhouse": str(wheelhouse), "files": names}

    def download(requirements: list[str]) -> tuple[Path | None, list[str]]:
        return try_cached_wheels("mirror-wheels", requirements, python, glibc, run, options, key)

    env = marker_environment(python)
    where = target_words(python, glibc)
    wanted, failed = [], []
    for pin in pins:
        req = Requirement(pin)
        if req.marker is not None and not req.marker.evaluate(env):
            name = canonicalize_name(req.name)
            failed.append(Unmirrored(pin, "marker", f"its marker is false for {where}", name))
        else:
            wanted.append(pin)
    exact = [p.split(";")[0].strip() for p in wanted]
    found, missing = _download_all(exact, download, where)
    failed += missing
    extras = {canonicalize_name(r.name): set(r.extras) for r in map(Requirement, exact)}
    pinned = {w.name: w for w in (_read_wheel(p, extras) for p in found)}
    deps, unavailable = _dependencies(pinned, extras, env, download, where, run)
    left_out = _broken(pinned, deps, unavailable, extras, env)
    failed += [
        Unmirrored(_pin_of(pinned[n]), "no-wheel", f"needs {need}, which has {why}", n)
        for n, (need, why) in sorted(left_out.items())
    ]
    kept = [w for n, w in sorted(pinned.items()) if n not in left_out]
    added = [deps[n] for n in sorted(deps)]
    run.emit("mirror", f"{len(kept)} of {len(pins)} mirrored pins have wheels for {where}")
    return MirrorWheels(
        tuple(w.path for w in [*kept, *added]),
        tuple(_pin_of(w) for w in kept),
        tuple(_pin_of(w) for w in added),
        tuple(failed),
    )


# --------------------------------------------------------------------------- downloads


def _download_all(
    requirements: list[str], download: Download, where: str
) -> tuple[list[Path], list[Unmirrored]]:
    """The wheels of every requirement that has one, and why the others have none."""
    failed: list[Unmirrored] = []
    remaining = list(requirements)
    for _ in range(WHOLE_SET_TRIES):
        if not remaining:
            return [], failed
        folder, output = download(remaining)
        if folder is not None:
            return _wheel_files(folder), failed
        culprit = _culprit(output, remaining, where)
        if culprit is None:
            break
        failed.append(culprit)
        remaining = [r for r in remaining if requirement_name(r) != culprit.name]
    files: list[Path] = []
    for requirement in remaining:  # one at a time: each is cached on its own
        folder, output = download([requirement])
        if folder is not None:
            files += _wheel_files(folder)
        else:
            failed.append(_explain(requirement, output, where))
    return files, failed


def _wheel_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.name.endswith(".whl")]


def _dependencies(
    pinned: dict[str, _Wheel],
    extras: dict[str, set[str]],
    env: dict[str, str],
    download: Download,
    where: str,
    run: BuildRun,
) -> tuple[dict[str, _Wheel], dict[str, str]]:
    """The wheels of what the pins need and do not pin, and the names that have none (with
    why), round after round."""
    deps: dict[str, _Wheel] = {}
    unavailable: dict[str, str] = {}
    for _ in range(DEPENDENCY_ROUNDS):
        wanted: dict[str, list[Requirement]] = {}
        for wheel in [*pinned.values(), *deps.values()]:
            for req in _needed(wheel, extras, env):
                name = canonicalize_name(req.name)
                if name not in pinned and name not in deps and name not in unavailable:
                    wanted.setdefault(name, []).append(req)
        if not wanted:
            break
        merged = {n: _merge(n, reqs, extras) for n, reqs in sorted(wanted.items())}
        run.emit("mirror", f"the pins' dependencies: {', '.join(merged.values())}")
        files, missing = _download_all(list(merged.values()), download, where)
        for path in files:
            wheel = _read_wheel(path, extras)
            if wheel.name in merged:
                deps.setdefault(wheel.name, wheel)
        for entry in missing:
            unavailable[entry.name or ""] = entry.detail
        for name in merged:  # pip saved nothing and said nothing: do not ask again
            if name not in deps and name not in unavailable:
                unavailable[name] = "pip download gave no wheel"
    return deps, unavailable


def _merge(name: str, reqs: list[Requirement], extras: dict[str, set[str]]) -> str:
    """One requirement for a name several wheels require: their specifiers together."""
    specifier = SpecifierSet()
    for req in reqs:
        specifier &= req.specifier
        extras.setdefault(name, set()).update(req.extras)
    wanted = sorted(extras.get(name, ()))
    return f"{name}{'[' + ','.join(wanted) + ']' if wanted else ''}{specifier}"


def _needed(wheel: _Wheel, extras: dict[str, set[str]], env: dict[str, str]) -> list[Requirement]:
    """A wheel's requirements that hold on the image, for the extras asked of it."""
    asked = ["", *sorted(extras.get(wheel.name, ()))]
    out = []
    for req in wheel.requires:
        if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in asked):
            out.append(req)
    return out


def _broken(
    pinned: dict[str, _Wheel],
    deps: dict[str, _Wheel],
    unavailable: dict[str, str],
    extras: dict[str, set[str]],
    env: dict[str, str],
) -> dict[str, tuple[str, str]]:
    """Pins that need, directly or not, a name without a wheel: ``{pin: (name, why)}``."""
    every = {**deps, **pinned}
    out: dict[str, tuple[str, str]] = {}
    for name in pinned:
        seen, stack = {name}, [name]
        while stack and name not in out:
            for req in _needed(every[stack.pop()], extras, env):
                needed = canonicalize_name(req.name)
                if needed in unavailable:
                    out[name] = (str(req), unavailable[needed])
                    break
                if needed in every and needed not in seen:
                    seen.add(needed)
                    stack.append(needed)
    return out


def _read_wheel(path: Path, extras: dict[str, set[str]]) -> _Wheel:
    """A wheel's name, version and ``Requires-Dist``, read from the file."""
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
    except InvalidWheelFilename:
        name, version = canonicalize_name(path.name.split("-")[0]), path.name.split("-")[1]
    requires: list[Requirement] = []
    try:
        with zipfile.ZipFile(path) as archive:
            meta = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
            text = archive.read(meta).decode("utf-8", errors="replace") if meta else ""
    except (OSError, zipfile.BadZipFile):
        text = ""
    for line in email.parser.Parser().parsestr(text, headersonly=True).get_all("Requires-Dist", []):
        try:
            requires.append(Requirement(line))
        except InvalidRequirement:
            continue
    return _Wheel(canonicalize_name(name), str(version), path, tuple(requires))


def _pin_of(wheel: _Wheel) -> str:
    return f"{wheel.name}=={wheel.version}"


# --------------------------------------------------------------------------- pip's words


def _culprit(output: list[str], requirements: list[str], where: str) -> Unmirrored | None:
    """The entry of the set that pip's failure is about, when pip names one."""
    by_name = {requirement_name(r): r for r in requirements}
    for line in output:
        wrong = _WRONG_PYTHON.search(line)
        if wrong and _safe_name(wrong.group(1)) in by_name:
            return _explain(by_name[_safe_name(wrong.group(1))], output, where)
        found = _NOT_FOUND.search(line)
        if found and _safe_name(found.group(1)) in by_name:
            return _explain(by_name[_safe_name(found.group(1))], output, where)
    return None


def _explain(requirement: str, output: list[str], where: str) -> Unmirrored:
    """Why pip found no wheel for ``requirement``, from its output."""
    name = requirement_name(requirement)
    for line in output:
        wrong = _WRONG_PYTHON.search(line)
        if wrong and _safe_name(wrong.group(1)) == name:
            detail = f"no wheel for {where}: {_version(requirement)} needs Python {wrong.group(2)}"
            return Unmirrored(requirement, "no-wheel", detail, name)
        found = _NOT_FOUND.search(line)
        if not found or _safe_name(found.group(1)) != name:
            continue
        listed = [v.strip() for v in (found.group(3) or "").split(",")]
        listed = [v for v in listed if v and v != "none"]
        have = "no version has one"
        if listed:
            more = "..., " if len(listed) > SHOWN_VERSIONS else ""
            have = f"versions with one: {more}{', '.join(listed[-SHOWN_VERSIONS:])}"
        needs = _needs_python(requirement, output)
        return Unmirrored(requirement, "no-wheel", f"no wheel for {where}{needs} ({have})", name)
    errors = [line.removeprefix("ERROR: ") for line in output if line.startswith("ERROR:")]
    detail = errors[-1] if errors else (output[-1] if output else "pip download failed")
    return Unmirrored(requirement, "download-failed", detail, name)


def _version(requirement: str) -> str:
    specifiers = list(Requirement(requirement).specifier)
    return specifiers[0].version if len(specifiers) == 1 else requirement


def _needs_python(requirement: str, output: list[str]) -> str:
    """``: 4.1.3 needs Python >=3.11.5`` when pip ignored the pinned version for that."""
    specifiers = list(Requirement(requirement).specifier)
    if len(specifiers) != 1 or specifiers[0].operator not in ("==", "==="):
        return ""
    version = re.escape(specifiers[0].version)
    for line in output:
        if _IGNORED_PYTHON in line:
            found = re.search(rf"(?:: |; ){version} Requires-Python ([^;]+)", line)
            if found:
                return f": {specifiers[0].version} needs Python {found.group(1).strip()}"
    return ""


def _safe_name(requirement: str | None) -> str | None:
    if not requirement:
        return None
    try:
        return requirement_name(requirement)
    except InvalidRequirement:
        return canonicalize_name(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
