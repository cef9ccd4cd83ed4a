"""Base images: built once per content hash, by Debian bootstrap or by a Dockerfile.

Two ways to build, chosen by the spec:

* ``bootstrap: debian`` (air-gapped): ``mmdebstrap`` makes a minimal Debian root file
  system from the host's apt sources, with ipykernel installed into ``/opt/dss/venv`` from
  a wheelhouse; the tarball is imported through the docker SDK. The imported *root file
  system* is kept under ``dss-containers/rootfs:<hash>`` (its hash leaves out the name,
  the description and the Dockerfile fragments), so base images that differ only in
  those reuse it. A tiny classic ``docker build`` (network ``none``) then adds the labels
  and the ``dockerfile_prepend``/``dockerfile_append`` fragments.
* ``from: <image>`` (or ``with_cuda`` without ``from``): a generated Dockerfile on top of
  that image, built with the classic builder; ipykernel comes from a wheelhouse in the
  build context when one can be made for the image's Python, else from the package index.

The tag is ``dss-containers/base-<name>:<hash12>``, a hash of everything that goes into
the image, so :func:`base_image_tag` needs no daemon and a second build is a no-op.
Dockerfile fragments run as root; the image's user is set back to ``1000:100`` after them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from .backends.base import BackendUnavailable
from .config import BaseImageSpec, ConfigFile, ExecutionConfig
from .envrecipe import recipe_for
from .registry import qualified

IMAGE_REPO_PREFIX = "dss-containers/"
ROOTFS_REPO = IMAGE_REPO_PREFIX + "rootfs"
KERNEL_PYTHON = "/opt/dss/venv/bin/python"
VENV = "/opt/dss/venv"
#: bump when a change of the build changes images in a way the hashed recipe (Dockerfile,
#: customize hooks, import settings) does not show, e.g. mmdebstrap options
BUILDER_VERSION = "1"
#: the kernel packages of every image we build: pinned here, not taken from the host, so
#: upgrading the server's own ipykernel does not turn every image tag stale
KERNEL_PINS = {"ipykernel": "7.4.0"}
CUDA_DEFAULT_FROM = "nvidia/cuda:12.4.1-runtime-ubuntu22.04"

LABEL_PREFIX = "dss-containers.jupyter.org/"
LABEL_BASE_IMAGE = LABEL_PREFIX + "base-image"
LABEL_CONTENT_HASH = LABEL_PREFIX + "content-hash"
LABEL_WITH_R = LABEL_PREFIX + "with-r"
LABEL_ROOTFS = LABEL_PREFIX + "rootfs"

IMAGE_USER = "1000:100"
IMAGE_HOME = "/home/jovyan"
IMAGE_PATH = "/opt/dss/venv/bin:/usr/local/bin:/usr/bin:/bin"
BOOTSTRAP_PACKAGES = ("python3", "python3-venv", "tini")
R_PACKAGES = ("r-base-core", "r-cran-irkernel")
#: Debian suite -> (Python version, glibc version): what the wheelhouse must fit
SUITES = {"bullseye": ("3.9", "2.31"), "bookworm": ("3.11", "2.36"), "trixie": ("3.13", "2.41")}
#: a deb822 file to bootstrap from instead of the host's apt sources
APT_SOURCES_ENV = "DSS_CONTAINERS_APT_SOURCES"
#: where builds write their scratch files (build contexts, bootstrap trees) instead of the
#: system's temporary folder, e.g. a roomier disk
BUILD_TMPDIR_ENV = "DSS_CONTAINERS_BUILD_TMPDIR"
HOST_APT_DIR = Path("/etc/apt")
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
WHEEL_SUFFIXES = (".whl", ".tar.gz", ".zip")
LOG_TAIL = 20


class ImageBuildError(RuntimeError):
    """A base image could not be built; the message ends with the build log's tail."""


@dataclass
class BuildEvent:
    """One progress step of a build, for a terminal, a log or the server's UI."""

    image: str
    step: str
    message: str
    progress: float | None = None


ProgressSink = Callable[[BuildEvent], None]


# --------------------------------------------------------------------------- naming


def friendly_tag(spec: BaseImageSpec) -> str:
    """The moving tag of the last image built for this base image name."""
    return f"{_repository(spec)}:latest"


def base_image_tag(spec: BaseImageSpec) -> str:
    """The content tag: same spec, same tag (given the same host apt sources and ipykernel)."""
    return f"{_repository(spec)}:{content_hash(spec)[:12]}"


def content_hash(spec: BaseImageSpec) -> str:
    """sha256 of a canonical JSON of everything that goes into the image."""
    return _sha256(_content(spec))


def resolve_image(
    config_file: ConfigFile, config: ExecutionConfig, code_env: str | None = None
) -> str:
    """The image a config runs: its base image's content tag, or its image reference.

    With ``code_env``, the (env, config) image's content tag (see :mod:`.envrecipe`); a
    code env not available for the config raises :class:`.envrecipe.CodeEnvError`. A
    config with a ``registry`` runs the image by its name in that registry.
    """
    spec = config_file.base_image_of(config)
    ref = base_image_tag(spec) if spec is not None else config.image
    if code_env:
        ref = recipe_for(config_file, code_env, config, ref).tag
    elif spec is None:
        return ref  # an image reference is used as written
    return qualified(config.registry, ref)


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    """Whether the daemon has an image by that reference (no pull)."""
    try:
        client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def is_bootstrap(spec: BaseImageSpec) -> bool:
    """Bootstrap unless the spec names an image to build on (or needs the CUDA one)."""
    return not (spec.from_image or spec.with_cuda)


def effective_from(spec: BaseImageSpec) -> str | None:
    """The image a Dockerfile build starts from (``with_cuda`` defaults to nvidia/cuda)."""
    if spec.from_image:
        return spec.from_image
    return CUDA_DEFAULT_FROM if spec.with_cuda else None


def _repository(spec: BaseImageSpec) -> str:
    return f"{IMAGE_REPO_PREFIX}base-{spec.name}"


def _rootfs_tag(spec: BaseImageSpec) -> str:
    return f"{ROOTFS_REPO}:{_sha256(_rootfs_content(spec))[:12]}"


def _sha256(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _content(spec: BaseImageSpec) -> dict[str, Any]:
    """All inputs of the final image; the description and wheelhouse path are left out."""
    fields = asdict(spec)
    for key in ("description", "wheelhouse"):
        fields.pop(key)
    content = {
        "builder": BUILDER_VERSION,
        "spec": fields,
        "from": effective_from(spec),
        "kernel": kernel_pins(),
        "wheels": _wheel_names(spec),
        "recipe": _render(spec, True, "LABEL"),
    }
    if is_bootstrap(spec):
        content["rootfs"] = _rootfs_content(spec)
    return content


def _rootfs_content(spec: BaseImageSpec) -> dict[str, Any]:
    """Inputs of the bootstrapped root file system (shared by same-content base images)."""
    return {
        "builder": BUILDER_VERSION,
        "suite": spec.suite,
        "arch": platform.machine(),
        "apt": [asdict(s) for s in bootstrap_sources(spec.suite)],
        "packages": _bootstrap_packages(spec),
        "with_r": spec.with_r,
        "kernel": kernel_pins(),
        "python_packages": list(spec.python_packages),
        "wheels": _wheel_names(spec),
        "hooks": _customize_hooks(spec, Path("/wheels")),
        "import": _import_changes(spec),
    }


def kernel_pins() -> dict[str, str]:
    """The kernel packages installed into every image (part of every content hash)."""
    return dict(KERNEL_PINS)


def _wheel_names(spec: BaseImageSpec) -> list[str] | None:
    """Names of the files in a configured wheelhouse (None when none is configured)."""
    if not spec.wheelhouse:
        return None
    folder = _wheelhouse_path(spec)
    if not folder.is_dir():
        return ["<missing folder>"]
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(WHEEL_SUFFIXES))


def _wheelhouse_path(spec: BaseImageSpec) -> Path:
    return Path(os.path.expanduser(spec.wheelhouse or ""))


def _bootstrap_packages(spec: BaseImageSpec) -> list[str]:
    extra = R_PACKAGES if spec.with_r else ()
    return list(dict.fromkeys((*BOOTSTRAP_PACKAGES, *spec.system_packages, *extra)))


def _requirements(spec: BaseImageSpec) -> list[str]:
    """What pip installs into the venv: the pinned kernel, then the spec's packages.

    A configured wheelhouse decides the ipykernel version itself (it is hashed by name).
    """
    kernel = ["ipykernel"] if spec.wheelhouse else [f"{n}=={v}" for n, v in kernel_pins().items()]
    return [*kernel, *spec.python_packages]


# --------------------------------------------------------------------------- apt sources


@dataclass(frozen=True)
class AptSource:
    """One deb822 stanza, as mmdebstrap and the image's apt will read it."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None

    def render(self) -> str:
        lines = [
            "Types: deb",
            f"URIs: {' '.join(self.uris)}",
            f"Suites: {' '.join(self.suites)}",
            f"Components: {' '.join(self.components)}",
        ]
        if self.signed_by:
            lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def bootstrap_sources(suite: str) -> list[AptSource]:
    """The host's Debian apt sources, with its release name swapped for ``suite``.

    Mirrors are read from the host (or ``$DSS_CONTAINERS_APT_SOURCES``), never written
    in this package, so a site's own mirror or snapshot is what images are built from.
    """
    override = os.environ.get(APT_SOURCES_ENV)
    if override:
        return _parse_deb822(Path(override).read_text())
    host_suite = _host_codename()
    found = [s for s in _host_sources() if _is_debian_source(s, host_suite)]
    if not host_suite or host_suite == suite:
        return found
    return [
        AptSource(
            s.uris,
            tuple(_swap_suite(x, host_suite, suite) for x in s.suites),
            s.components,
            s.signed_by,
        )
        for s in found
    ]


def _host_sources() -> list[AptSource]:
    sources: list[AptSource] = []
    for path in sorted(HOST_APT_DIR.glob("sources.list.d/*.sources")):
        sources += _parse_deb822(path.read_text())
    one_line_files = [HOST_APT_DIR / "sources.list", *HOST_APT_DIR.glob("sources.list.d/*.list")]
    for path in sorted(one_line_files):
        if path.is_file():
            sources += _parse_one_line(path.read_text())
    return sources


def _parse_deb822(text: str) -> list[AptSource]:
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        types = fields.get("types", "").split()
        if "deb" not in types or fields.get("enabled", "yes").lower() == "no":
            continue
        sources.append(
            AptSource(
                uris=tuple(fields.get("uris", "").split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                signed_by=fields.get("signed-by"),
            )
        )
    return sources


def _parse_one_line(text: str) -> list[AptSource]:
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        options = re.search(r"\[([^\]]*)\]", line)
        words = re.sub(r"\[[^\]]*\]", "", line).split()
        if len(words) < 3 or words[0] != "deb":
            continue
        signed_by = None
        for option in options.group(1).split() if options else []:
            if option.startswith("signed-by="):
                signed_by = option.split("=", 1)[1]
        sources.append(AptSource((words[1],), (words[2],), tuple(words[3:]), signed_by))
    return sources


def _host_codename() -> str | None:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    return match.group(1) if match else None


def _is_debian_source(source: AptSource, host_suite: str | None) -> bool:
    """Keep Debian's own archives (not third-party repositories the host also uses)."""
    if source.signed_by and "debian-archive" not in source.signed_by:
        return False
    if host_suite is None:
        return True
    return all(s == host_suite or s.startswith(host_suite + "-") for s in source.suites)


def _swap_suite(name: str, host_suite: str, suite: str) -> str:
    return suite + name[len(host_suite) :] if name.startswith(host_suite) else name


# --------------------------------------------------------------------------- progress


@dataclass
class BuildRun:
    """One build in progress: where its events go and the log tail for error messages."""

    image: str
    sink: ProgressSink | None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL))
    kind: str = "base image"

    def emit(self, step: str, message: str, progress: float | None = None) -> None:
        if self.sink is not None:
            self.sink(BuildEvent(self.image, step, message, progress))

    def log(self, step: str, line: str, progress: float | None = None) -> None:
        """A build-log line: kept for the error message and shown as an event."""
        line = line.rstrip()
        if line:
            self.tail.append(line)
            self.emit(step, line, progress)

    def fail(self, what: str) -> ImageBuildError:
        tail = "".join(f"\n{line}" for line in self.tail)
        return ImageBuildError(f"building {self.kind} {self.image!r} failed: {what}{tail}")


class ConsoleProgress:
    """Shows build events in a terminal: a spinner with the latest line, one line per step.

    ``verbose`` prints every log line as well (what ``--verbose`` in the CLI wants).
    """

    def __init__(self, console: Any = None, verbose: bool = False):
        from rich.console import Console  # here: the kernel provisioner never needs rich

        self.console = console if console is not None else Console(stderr=True)
        self.verbose = verbose
        self._status: Any = None
        self._step: tuple[str, str] | None = None
        self._started = time.monotonic()

    def __enter__(self) -> ConsoleProgress:
        self._status = self.console.status("starting", spinner="dots")
        self._status.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc_info)
            self._status = None

    def __call__(self, event: BuildEvent) -> None:
        from rich.markup import escape

        key = (event.image, event.step)
        if key != self._step or self.verbose or event.step in ("done", "cached"):
            self._step = key
            mark = "[green]✓[/]" if event.step in ("done", "cached") else "[cyan]•[/]"
            elapsed = time.monotonic() - self._started
            self.console.print(
                f"{mark} [bold]{escape(event.image)}[/] {escape(event.step)}: "
                f"{escape(event.message)} [dim]({elapsed:.0f} s)[/]",
                highlight=False,
            )
        if self._status is not None:
            percent = f" {event.progress:.0%}" if event.progress is not None else ""
            self._status.update(
                f"[bold]{escape(event.image)}[/] {escape(event.step)}{percent}: "
                f"{escape(event.message[:100])}"
            )


# --------------------------------------------------------------------------- build


def build_base_image(
    spec: BaseImageSpec,
    client: docker.DockerClient,
    progress: ProgressSink | None = None,
    force: bool = False,
) -> str:
    """Build a base image unless its content tag exists; return the content tag.

    On success the image carries the content tag and the friendly ``:latest`` tag; on
    failure neither tag is created (a bootstrapped root file system stays cached).
    ``force`` rebuilds everything, the root file system included (not the wheelhouse).
    """
    run = BuildRun(spec.name, progress)
    tag = base_image_tag(spec)
    run.emit("resolve", f"{'bootstrap' if is_bootstrap(spec) else 'Dockerfile'} build -> {tag}")
    with daemon_errors(run):
        return _build(spec, client, run, tag, force)


@contextlib.contextmanager
def daemon_errors(run: BuildRun) -> Iterator[None]:
    """Daemon refusals become build errors; a daemon out of reach says so."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise run.fail(f"Docker daemon: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
        raise BackendUnavailable(f"Docker daemon is unreachable: {exc}") from None


def _build(
    spec: BaseImageSpec, client: docker.DockerClient, run: BuildRun, tag: str, force: bool
) -> str:
    if not force and image_exists(client, tag):
        _tag_friendly(client, tag, spec)
        run.emit("cached", f"{tag} is up to date", 1.0)
        return tag
    started = time.monotonic()
    if spec.wheelhouse and not _wheelhouse_path(spec).is_dir():
        raise run.fail(f"wheelhouse folder {spec.wheelhouse} does not exist")
    if is_bootstrap(spec):
        _build_bootstrapped(spec, client, run, tag, force)
    else:
        _build_from_image(spec, client, run, tag, force)
    try:
        _tag_friendly(client, tag, spec)
    except docker.errors.APIError as exc:
        _untag(client, tag)
        raise run.fail(f"tagging {friendly_tag(spec)}: {exc.explanation or exc}") from None
    run.emit("done", f"built {tag} in {time.monotonic() - started:.0f} s", 1.0)
    return tag


def _tag_friendly(client: docker.DockerClient, tag: str, spec: BaseImageSpec) -> None:
    repository, _, name = friendly_tag(spec).rpartition(":")
    client.api.tag(tag, repository, name, force=True)


def _untag(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.api.remove_image(ref)


def _build_bootstrapped(
    spec: BaseImageSpec, client: docker.DockerClient, run: BuildRun, tag: str, force: bool
) -> None:
    if spec.bootstrap not in (None, "debian"):
        raise run.fail(f"unknown bootstrap {spec.bootstrap!r} (expected 'debian')")
    rootfs = _rootfs_tag(spec)
    if force or not image_exists(client, rootfs):
        with tempfile.TemporaryDirectory(prefix="dss-bootstrap-", dir=_build_tmpdir()) as tmp:
            wheels = _bootstrap_wheelhouse(spec, run, Path(tmp))
            tarball = _run_mmdebstrap(spec, run, Path(tmp), wheels)
            _import_rootfs(client, run, tarball, rootfs, spec)
    else:
        run.emit("bootstrap", f"reusing root file system {rootfs}")
    dockerfile = render_dockerfile(spec, wheelhouse_present=False)
    _docker_build(client, run, dockerfile, None, tag, network_mode="none", nocache=force)


def _build_from_image(
    spec: BaseImageSpec, client: docker.DockerClient, run: BuildRun, tag: str, force: bool
) -> None:
    base = effective_from(spec) or ""
    probe = _probe_image(client, run, base, spec)
    wheels: Path | None = None
    if spec.wheelhouse:
        wheels = _wheelhouse_path(spec)
    elif probe.python and probe.glibc:
        wheels = ensure_wheelhouse(spec, probe.python, probe.glibc, run)
    network = "none" if wheels is not None and not probe.missing else None
    dockerfile = render_dockerfile(spec, wheelhouse_present=wheels is not None)
    _docker_build(client, run, dockerfile, wheels, tag, network_mode=network, nocache=force)


# --------------------------------------------------------------------------- wheelhouse


def ensure_wheelhouse(
    spec: BaseImageSpec, python: str, glibc: str, run: BuildRun | None = None
) -> Path:
    """A cached folder of wheels for the kernel and the spec's packages, for one Python."""
    return cached_wheels(
        "wheelhouse", _requirements(spec), python, glibc, run or BuildRun(spec.name, None)
    )


def cached_wheels(
    kind: str, requirements: list[str], python: str, glibc: str, run: BuildRun
) -> Path:
    """``pip download`` on the host, once per (requirements, Python, platform).

    The folder lives under the user cache folder, so a rebuild needs no index; it is
    filled aside and renamed into place, so a half-done download is never used.
    """
    arch = platform.machine()
    key = _sha256({"req": requirements, "python": python, "glibc": glibc, "arch": arch})
    folder = _cache_dir() / f"{kind}-{key[:16]}"
    if (folder / ".complete").exists():
        run.emit("wheelhouse", f"using cached wheels {folder}")
        return folder
    run.emit("wheelhouse", f"downloading wheels for Python {python} into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        _pip_download(requirements, run, partial, python, glibc, arch)
        (partial / ".complete").touch()
        try:
            partial.rename(folder)
        except OSError:  # another build finished the same folder first
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jupyter-dss-containers"


def _platform_tags(arch: str, glibc: str) -> list[str]:
    """manylinux tags an image with this glibc accepts, newest last."""
    have = tuple(int(x) for x in glibc.split(".")[:2])
    tags = [f"manylinux_2_17_{arch}", f"manylinux2014_{arch}"]
    tags += [f"manylinux_{v[0]}_{v[1]}_{arch}" for v in ((2, 28), (2, 34)) if v <= have]
    return tags


_PIP_DOWNLOAD = ("--disable-pip-version-check", "--progress-bar", "off", "--only-binary=:all:")


def _pip_download(
    requirements: list[str], run: BuildRun, dest: Path, python: str, glibc: str, arch: str
) -> None:
    cmd = [sys.executable, "-m", "pip", "download", *_PIP_DOWNLOAD, "--python-version", python]
    for tag in _platform_tags(arch, glibc):
        cmd += ["--platform", tag]
    cmd += ["-d", str(dest), *requirements]
    code = _stream_process(cmd, run, "wheelhouse")
    if code != 0:
        raise run.fail(f"pip download exited with code {code}")


def _bootstrap_wheelhouse(spec: BaseImageSpec, run: BuildRun, tmp: Path) -> Path:
    """The wheels to copy into the root file system, in a folder without spaces."""
    if spec.wheelhouse:
        source = _wheelhouse_path(spec)
    else:
        if spec.suite not in SUITES:
            known = ", ".join(SUITES)
            raise run.fail(f"no known Python for suite {spec.suite!r} ({known}); set a wheelhouse")
        source = ensure_wheelhouse(spec, *SUITES[spec.suite], run)
    copy = tmp / "wheels"
    copy.mkdir()
    for path in source.iterdir():
        if path.name.endswith(WHEEL_SUFFIXES):
            shutil.copy2(path, copy / path.name)
    return copy


# --------------------------------------------------------------------------- bootstrap

#: mmdebstrap's info lines -> rough share of the bootstrap done
_MMDEBSTRAP_PHASES = (
    ("running apt-get update", 0.05),
    ("downloading packages", 0.15),
    ("extracting archives", 0.3),
    ("installing essential packages", 0.35),
    ("installing remaining packages", 0.5),
    ("running --customize-hook", 0.7),
    ("cleaning", 0.85),
    ("creating tarball", 0.9),
    ("done", 1.0),
)


def mmdebstrap_command(spec: BaseImageSpec, wheels: Path, sources: Path, out: Path) -> list[str]:
    """The mmdebstrap call that makes the root file system tarball (hooks run as root)."""
    mode = "root" if os.geteuid() == 0 else "unshare"
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(_bootstrap_packages(spec))}",
        f"--mode={mode}",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        '--aptopt=APT::Install-Recommends "false"',
    ]
    if MERGED_USR_HOOKS.is_dir():
        cmd.append(f"--hook-dir={MERGED_USR_HOOKS}")
    cmd += [f"--customize-hook={hook}" for hook in _customize_hooks(spec, wheels)]
    return [*cmd, spec.suite, str(out), str(sources)]


#: every .pyc of the venv checked against nothing: mmdebstrap clamps file times, which would
#: make timestamp-based ones (ensurepip's too, hence -f) stale and recompiled at each start
_COMPILEALL = f"{KERNEL_PYTHON} -m compileall -q -f --invalidation-mode unchecked-hash {VENV}/lib"


def _customize_hooks(spec: BaseImageSpec, wheels: Path) -> list[str]:
    pip = f"{VENV}/bin/pip install -q --no-cache-dir --disable-pip-version-check --no-index"
    requirements = " ".join(shlex.quote(r) for r in _requirements(spec))
    hooks = [
        'mkdir -p "$1/tmp/wh"',
        f"copy-in {wheels}/. /tmp/wh",
        _in_chroot(f"/usr/bin/python3 -m venv {VENV}"),
        _in_chroot(f"{pip} --find-links /tmp/wh --no-compile {requirements}"),
        _in_chroot(_COMPILEALL),
        _in_chroot(f"{KERNEL_PYTHON} -c 'import ipykernel'"),
    ]
    if spec.with_r:
        hooks.append(_in_chroot("Rscript -e 'library(IRkernel)'"))
    hooks += [
        _in_chroot("useradd -m -u 1000 -g 100 -s /bin/bash jovyan"),
        'rm -rf "$1/tmp/wh"',
    ]
    return hooks


def _in_chroot(command: str) -> str:
    """A customize hook running ``command`` in the new system, without the host's env."""
    env = "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8"
    return f'chroot "$1" {env} {command}'


def _run_mmdebstrap(spec: BaseImageSpec, run: BuildRun, tmp: Path, wheels: Path) -> Path:
    if " " in str(wheels):
        raise run.fail(f"the temporary folder {wheels} contains a space (mmdebstrap copy-in)")
    if shutil.which("mmdebstrap") is None:
        raise run.fail("mmdebstrap is not installed (apt-get install mmdebstrap)")
    sources = bootstrap_sources(spec.suite)
    if not sources:
        raise run.fail(f"no Debian apt sources on this host; set {APT_SOURCES_ENV}")
    sources_file = tmp / "bootstrap.sources"
    sources_file.write_text("\n".join(s.render() for s in sources))
    out = tmp / "rootfs.tar"
    packages = ", ".join(_bootstrap_packages(spec))
    run.emit("bootstrap", f"mmdebstrap {spec.suite} with {packages}", 0.0)
    command = mmdebstrap_command(spec, wheels, sources_file, out)
    code = _stream_process(command, run, "bootstrap", _mmdebstrap_progress)
    if code != 0 or not out.is_file():
        raise run.fail(f"mmdebstrap exited with code {code}")
    return out


def _mmdebstrap_progress(line: str) -> float | None:
    for marker, share in _MMDEBSTRAP_PHASES:
        if line.startswith(f"I: {marker}"):
            return share
    return None


def _stream_process(
    cmd: list[str],
    run: BuildRun,
    step: str,
    progress_of: Callable[[str], float | None] = lambda _line: None,
) -> int:
    """Run a command, turning each output line into an event; return its exit code."""
    progress: float | None = None
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            progress = progress_of(line) or progress
            run.log(step, line, progress)
        return proc.wait()


def _import_changes(spec: BaseImageSpec) -> list[str]:
    """Image settings given at import (a tarball has none)."""
    return [
        f"ENV PATH={IMAGE_PATH}",
        f"ENV HOME={IMAGE_HOME}",
        "ENV LANG=C.UTF-8",
        f"USER {IMAGE_USER}",
        f"WORKDIR {IMAGE_HOME}",
        f"LABEL {LABEL_WITH_R}={str(spec.with_r).lower()}",
    ]


def _import_rootfs(
    client: docker.DockerClient, run: BuildRun, tarball: Path, rootfs: str, spec: BaseImageSpec
) -> None:
    """Import the tarball with the image settings every base image shares."""
    size = tarball.stat().st_size / 1024**2
    run.emit("import", f"importing {size:.0f} MiB as {rootfs}")
    tag = rootfs.rpartition(":")[2]
    changes = [*_import_changes(spec), f"LABEL {LABEL_ROOTFS}={tag}"]
    try:
        # the tag goes in ``repo``: Podman 4 ignores the ``tag`` parameter (``:latest``)
        output = client.api.import_image_from_file(str(tarball), repository=rootfs, changes=changes)
    except docker.errors.APIError as exc:
        raise run.fail(f"docker import: {exc.explanation or exc}") from None
    for entry in _json_lines(output):
        if "error" in entry or "errorDetail" in entry:
            _untag(client, rootfs)
            raise run.fail(f"docker import: {_error_text(entry)}")


# --------------------------------------------------------------------------- Dockerfile


def render_dockerfile(spec: BaseImageSpec, wheelhouse_present: bool) -> str:
    """The Dockerfile of the final build step.

    For a ``from:`` (or CUDA) image: the whole setup on top of that image, tolerant of
    an existing ``/opt/dss/venv`` and uid 1000. For a bootstrapped one: labels and
    fragments on top of its root file system. ``dockerfile_prepend`` goes before ``FROM``
    (``ARG`` lines, extra stages); ``dockerfile_append`` runs as root, then the user is
    set back to 1000:100.
    """
    return _render(spec, wheelhouse_present, _label_line(spec))


def _render(spec: BaseImageSpec, wheelhouse_present: bool, label_line: str) -> str:
    parts = [spec.dockerfile_prepend.strip()]
    if is_bootstrap(spec):
        parts += [f"FROM {_rootfs_tag(spec)}"]
        if spec.dockerfile_append.strip():
            parts += ["USER root", spec.dockerfile_append.strip(), f"USER {IMAGE_USER}"]
        parts += [label_line]
    else:
        parts += [
            f"FROM {effective_from(spec)}",
            "USER root",
            f"RUN {_install_system_packages(spec)}",
            f"RUN {_ensure_user()}",
        ]
        if wheelhouse_present:
            parts += ["COPY wheelhouse/ /tmp/dss-wheelhouse/"]
        parts += [f"RUN {_install_kernel(spec, wheelhouse_present)}"]
        if spec.with_r:
            parts += ["RUN Rscript -e 'library(IRkernel)'"]
        parts += [
            f"ENV PATH={VENV}/bin:$PATH HOME={IMAGE_HOME}",
            spec.dockerfile_append.strip(),
            label_line,
            f"WORKDIR {IMAGE_HOME}",
            f"USER {IMAGE_USER}",
        ]
    return "\n".join(p for p in parts if p) + "\n"


def _label_line(spec: BaseImageSpec) -> str:
    labels = {
        LABEL_BASE_IMAGE: spec.name,
        LABEL_CONTENT_HASH: content_hash(spec),
        LABEL_WITH_R: str(spec.with_r).lower(),
    }
    return "LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items())


def _missing_packages_script(spec: BaseImageSpec) -> str:
    """Shell that sets ``$need`` to the packages the image still lacks.

    Python counts as present when ``python3`` can make a venv (so ``python:3.x`` images
    keep their own Python); other packages are checked with dpkg.
    """
    extra = R_PACKAGES if spec.with_r else ()
    wanted = " ".join(shlex.quote(p) for p in (*spec.system_packages, *extra))
    return "; ".join(
        [
            'need=""',
            "{ command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null; }"
            ' || need="$need python3 python3-venv"',
            'command -v tini >/dev/null || need="$need tini"',
            f'for p in {wanted}; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done'
            if wanted
            else "true",
        ]
    )


_APT_INSTALL_NEEDED = (
    'if [ -n "$need" ]; then '
    "if ! command -v apt-get >/dev/null; then "
    'echo "missing packages:$need, and no apt-get in the base image" >&2; exit 1; fi; '
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
    "--no-install-recommends $need; apt-get clean; "
    "rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; fi"
)


def _install_system_packages(spec: BaseImageSpec) -> str:
    return f"set -eu; {_missing_packages_script(spec)}; {_APT_INSTALL_NEEDED}"


def _ensure_user() -> str:
    return (
        "set -eu; getent group 100 >/dev/null || groupadd -g 100 users; "
        "getent passwd 1000 >/dev/null || useradd -m -u 1000 -g 100 -s /bin/bash jovyan; "
        f"mkdir -p {IMAGE_HOME} && chown 1000:100 {IMAGE_HOME}"
    )


def _install_kernel(spec: BaseImageSpec, wheelhouse_present: bool) -> str:
    """Make or update the venv; recompile only when pip changed it (else the layer is empty)."""
    source = "--no-index --find-links /tmp/dss-wheelhouse " if wheelhouse_present else ""
    requirements = " ".join(shlex.quote(r) for r in _requirements(spec))
    freeze = f"{VENV}/bin/pip freeze --all 2>/dev/null"
    return (
        f"set -eu; [ -x {KERNEL_PYTHON} ] || python3 -m venv {VENV}; before=$({freeze}); "
        f"{VENV}/bin/pip install -q --no-cache-dir --disable-pip-version-check {source}"
        f"--no-compile {requirements}; "
        f'[ "$before" = "$({freeze})" ] || {_COMPILEALL}; '
        "rm -rf /tmp/dss-wheelhouse"
    )


# --------------------------------------------------------------------------- docker build


@dataclass
class _Probe:
    """What a ``from:`` image already has: its Python and glibc, and what it lacks."""

    python: str | None
    glibc: str | None
    missing: bool


_PROBE_PYTHON = (
    "python3 -c 'import platform, sys; v = sys.version_info; "
    'print(f"python={v[0]}.{v[1]}"); print("glibc=" + platform.libc_ver()[1])\' 2>/dev/null || true'
)


def _probe_image(
    client: docker.DockerClient, run: BuildRun, ref: str, spec: BaseImageSpec
) -> _Probe:
    """Run the base image once to learn its Python (for the wheelhouse) and missing packages.

    An image not on the daemon is pulled first (the build would pull it anyway).
    """
    if not image_exists(client, ref):
        run.emit("resolve", f"pulling {ref}")
        try:
            client.images.pull(ref)
        except docker.errors.APIError as exc:
            reason = exc.explanation or exc
            raise run.fail(f"{ref} is not on the daemon and cannot be pulled: {reason}") from None
    script = f'{_missing_packages_script(spec)}; echo "need=$need"; {_PROBE_PYTHON}'
    try:
        raw = client.containers.run(
            ref, entrypoint=["/bin/sh", "-c", script], user="0", network_mode="none", remove=True
        )
    except docker.errors.DockerException:
        return _Probe(None, None, True)
    values = dict(line.split("=", 1) for line in raw.decode().splitlines() if "=" in line)
    return _Probe(
        python=values.get("python") or None,
        glibc=values.get("glibc") or None,
        missing=bool(values.get("need", "x").strip()),
    )


#: a build step's first line: ``Step 2/9 :`` (Docker) or ``STEP 2/9:`` (Podman)
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) ?:", re.IGNORECASE)


def _docker_build(
    client: docker.DockerClient,
    run: BuildRun,
    dockerfile: str,
    wheels: Path | None,
    tag: str,
    network_mode: str | None,
    nocache: bool,
) -> None:
    """A classic build, streamed as events; the tag is set only when every step passed."""
    run.emit("build", f"docker build -> {tag} (network {network_mode or 'default'})", 0.0)
    scratch = _build_tmpdir()
    with tempfile.TemporaryFile(dir=scratch) as context:
        try:
            _write_context(context, dockerfile, wheels)
        except OSError as exc:  # e.g. ENOSPC: say where, not a traceback
            where = scratch or tempfile.gettempdir()
            why = exc.strerror or str(exc)
            raise run.fail(f"cannot write the build context in {where}: {why}") from None
        context.seek(0)
        try:
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                decode=True,
                pull=False,
                rm=True,
                forcerm=True,
                nocache=nocache,
                network_mode=network_mode,
            )
            _follow_build(stream, run)
        except docker.errors.APIError as exc:
            raise run.fail(f"docker build: {exc.explanation or exc}") from None
    if not image_exists(client, tag):
        raise run.fail("docker build finished without producing the image")


def _follow_build(stream: Iterable[dict[str, Any]], run: BuildRun) -> None:
    progress = 0.0
    for chunk in stream:
        if "error" in chunk or "errorDetail" in chunk:
            run.tail.append(_error_text(chunk))
            raise run.fail(_error_text(chunk))
        for line in chunk.get("stream", "").splitlines():
            step = _STEP_RE.match(line)
            if step:
                progress = (int(step.group(1)) - 1) / int(step.group(2))
            run.log("build", line, progress)


def _build_tmpdir() -> str | None:
    return os.environ.get(BUILD_TMPDIR_ENV) or None


def _write_context(fileobj: Any, dockerfile: str, wheels: Path | None) -> None:
    """A tar build context: the Dockerfile and, when given, ``wheelhouse/``."""
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
        if wheels is not None:
            for path in sorted(wheels.iterdir()):
                if path.name.endswith(WHEEL_SUFFIXES):
                    tar.add(path, arcname=f"wheelhouse/{path.name}")


def _json_lines(text: str | bytes) -> Iterator[dict[str, Any]]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                yield entry


def _error_text(entry: dict[str, Any]) -> str:
    detail = entry.get("errorDetail") or {}
    return str(entry.get("error") or detail.get("message") or entry).strip()
