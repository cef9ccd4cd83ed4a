"""The pure parts of the image workshop, tested without an engine: apt sources, the image
contract given at import, the commit of a code env, probe output, the inventory's verdicts.

Each test names the breakage it guards; the builds themselves are tested for real in
test_images.py, test_code_envs.py and test_engines.py.
"""

from __future__ import annotations

import json

from jupyter_dss_containers import images
from jupyter_dss_containers.config import BaseImageSpec
from jupyter_dss_containers.images.apt import (
    AptSource,
    debian_sources_for,
    parse_deb822,
    parse_one_line,
)
from jupyter_dss_containers.images.envrecipe import EnvRecipe
from jupyter_dss_containers.images.inventory import classify, format_age

DEB822 = """\
Types: deb deb-src
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# a commented stanza
Types: deb
URIs: http://mirror.example/security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb-src
URIs: http://mirror.example/src
Suites: bookworm
Components: main
"""


def test_apt_sources_keep_enabled_deb_stanzas_and_move_to_the_suite():
    """Guards the mirror a bootstrap reads: disabled and source-only stanzas are skipped,
    third-party archives dropped, and the host's release names moved to the image's."""
    sources = parse_deb822(DEB822)
    assert sources == [
        AptSource(
            ("http://mirror.example/debian",),
            ("bookworm", "bookworm-updates"),
            ("main", "contrib"),
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        )
    ]
    one_line = parse_one_line(
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] "
        "https://download.example/linux bookworm stable\n"
        "deb http://mirror.example/debian bookworm main # comment\n"
        "deb-src http://mirror.example/debian bookworm main\n"
    )
    assert [s.uris for s in one_line] == [
        ("https://download.example/linux",),
        ("http://mirror.example/debian",),
    ]
    assert one_line[0].signed_by == "/etc/apt/keyrings/docker.gpg"
    moved = debian_sources_for(sources + one_line, "bookworm", "trixie")
    assert [s.suites for s in moved] == [("trixie", "trixie-updates"), ("trixie",)]
    assert debian_sources_for(sources, "bookworm", "bookworm") == sources
    assert moved[0].render().splitlines()[2] == "Suites: trixie trixie-updates"


def test_import_changes_carry_the_image_contract():
    """Guards what a bootstrapped root file system gets at import (a tarball has no
    settings): the non-root user, HOME, the venv first on PATH, and its labels."""
    spec = BaseImageSpec(name="x", bootstrap="debian", with_r=True)
    changes = images.import_changes(spec, "dss-containers/rootfs:abc123")
    assert changes == [
        "ENV PATH=/opt/dss/venv/bin:/usr/local/bin:/usr/bin:/bin",
        "ENV HOME=/home/jovyan",
        "ENV LANG=C.UTF-8",
        "USER 1000:100",
        "WORKDIR /home/jovyan",
        "LABEL dss-containers.jupyter.org/with-r=true",
        "LABEL dss-containers.jupyter.org/rootfs=abc123",
    ]
    # the root file system's own hash covers the changes without its label
    assert images.import_changes(spec) == changes[:-1]


def test_commit_changes_keep_the_base_image_settings():
    """Guards a code env's commit: the base's user, entry point, command and folder stay,
    an empty command becomes /bin/sh (a commit cannot empty it), one LABEL per label."""
    recipe = EnvRecipe("sk", "small", "dss-containers/base-default:abc", ("six==1",), ())
    bare = images.commit_changes({"User": "", "Cmd": None}, recipe)
    assert bare[:2] == ["USER 1000:100", 'CMD ["/bin/sh"]']
    labels = [c for c in bare if c.startswith("LABEL ")]
    assert labels == [f"LABEL {k}={json.dumps(v)}" for k, v in recipe.labels().items()]
    assert len(labels) == 4 and not any(c.startswith(("ENTRYPOINT", "WORKDIR")) for c in bare)
    cuda = {
        "User": "ubuntu",
        "Cmd": ["bash"],
        "Entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"],
        "WorkingDir": "/work",
    }
    full = images.commit_changes(cuda, recipe)
    assert full[:2] == ["USER ubuntu", 'CMD ["bash"]']
    assert full[-2:] == ['ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]', "WORKDIR /work"]


def test_probe_output_says_python_glibc_and_missing_packages():
    """Guards the wheels chosen for an image: its Python and glibc as printed, and an image
    that lacks packages (or whose probe printed nothing) is built with the network."""
    assert images.parse_probe("need=\npython=3.11\nglibc=2.36\n") == images.Probe(
        "3.11", "2.36", False
    )
    assert images.parse_probe("need= tini\npython=3.12\nglibc=2.39\n").missing
    assert images.parse_probe("") == images.Probe(None, None, True)
    assert images.parse_probe("python=3.11\nglibc=\n").glibc is None


def test_inventory_tells_current_stale_and_missing_builds():
    """Guards ``images`` and ``cleanup --images``: the expected tag is built, older builds
    of the same repository (Podman's qualified names included) are stale, ``:latest``
    alone names no build, and a repository without the expected tag is missing."""
    expected = "dss-containers/base-x:new"
    found = [
        {"RepoTags": ["docker.io/dss-containers/base-x:new"], "Size": 10, "Created": 100},
        {"RepoTags": ["dss-containers/base-x:latest", "dss-containers/base-x:old"], "Size": 9},
        {"RepoTags": ["localhost/dss-containers/base-x:older"], "Created": 50},
        {"RepoTags": ["dss-containers/base-y:new"]},
        {"RepoTags": None},
    ]
    states = classify("base", "x", None, expected, found)
    assert [(s.ref, s.state) for s in states] == [
        (expected, "built"),
        ("dss-containers/base-x:old", "stale"),
        ("dss-containers/base-x:older", "stale"),
    ]
    assert states[0].size == 10 and states[0].created.timestamp() == 100
    assert states[0].as_dict()["created"] == "1970-01-01T00:01:40+00:00"
    missing = classify("env", "sk", "small", expected, found[1:])
    assert (missing[0].ref, missing[0].state) == (expected, "missing")
    assert [s.state for s in missing[1:]] == ["stale", "stale"]
    assert [format_age(s) for s in (None, 0, 59, 60, 7200, 90000)] == [
        "-",
        "0s",
        "59s",
        "1min",
        "2h",
        "1d",
    ]
