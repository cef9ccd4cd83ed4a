"""The Debian apt sources a bootstrap reads: the host's own (or a site's override).

Mirrors are read from the host (or ``$DSS_CONTAINERS_APT_SOURCES``), never written in this
package, so a site's own mirror or snapshot is what images are built from. The parsers are
pure; :func:`bootstrap_sources` reads the host's files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: a deb822 file to bootstrap from instead of the host's apt sources
APT_SOURCES_ENV = "DSS_CONTAINERS_APT_SOURCES"
HOST_APT_DIR = Path("/etc/apt")


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
    """The host's Debian apt sources, with its release name swapped for ``suite``."""
    override = os.environ.get(APT_SOURCES_ENV)
    if override:
        return parse_deb822(Path(override).read_text())
    host_suite = host_codename()
    return debian_sources_for(host_sources(), host_suite, suite)


def debian_sources_for(
    sources: list[AptSource], host_suite: str | None, suite: str
) -> list[AptSource]:
    """Debian's own archives among ``sources``, moved from ``host_suite`` to ``suite``."""
    found = [s for s in sources if is_debian_source(s, host_suite)]
    if not host_suite or host_suite == suite:
        return found
    return [
        AptSource(
            s.uris,
            tuple(swap_suite(x, host_suite, suite) for x in s.suites),
            s.components,
            s.signed_by,
        )
        for s in found
    ]


def host_sources() -> list[AptSource]:
    """Every enabled ``deb`` source of the host, deb822 files first."""
    sources: list[AptSource] = []
    for path in sorted(HOST_APT_DIR.glob("sources.list.d/*.sources")):
        sources += parse_deb822(path.read_text())
    one_line_files = [HOST_APT_DIR / "sources.list", *HOST_APT_DIR.glob("sources.list.d/*.list")]
    for path in sorted(one_line_files):
        if path.is_file():
            sources += parse_one_line(path.read_text())
    return sources


def parse_deb822(text: str) -> list[AptSource]:
    """The enabled ``deb`` stanzas of a deb822 ``.sources`` file."""
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


def parse_one_line(text: str) -> list[AptSource]:
    """The ``deb`` lines of a one-line-style ``sources.list``."""
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


def host_codename() -> str | None:
    """The host's Debian release name (``bookworm``), from ``/etc/os-release``."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    return match.group(1) if match else None


def is_debian_source(source: AptSource, host_suite: str | None) -> bool:
    """Keep Debian's own archives (not third-party repositories the host also uses)."""
    if source.signed_by and "debian-archive" not in source.signed_by:
        return False
    if host_suite is None:
        return True
    return all(s == host_suite or s.startswith(host_suite + "-") for s in source.suites)


def swap_suite(name: str, host_suite: str, suite: str) -> str:
    """``bookworm-updates`` -> ``trixie-updates`` when moving bookworm to trixie."""
    return suite + name[len(host_suite) :] if name.startswith(host_suite) else name
