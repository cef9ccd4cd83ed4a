"""Every trait the package declares is documented and read (issue 13: "every knob a wired
trait"; ``ContainerProvisioner.launch_timeout`` was declared, documented and never read).

No engine: the package's modules are imported and their Configurables' own traits listed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

from traitlets import HasTraits

import jupyter_dss_containers

PACKAGE = Path(jupyter_dss_containers.__file__).parent
README = (PACKAGE.parent / "README.md").read_text()


def declared_traits(new_only: bool = False) -> list[tuple[str, str, object]]:
    """(class name, trait name, trait) for every trait a class of the package declares
    (``new_only``: not those redefining a base class's trait, which the base reads)."""
    found = []
    for module in pkgutil.walk_packages([str(PACKAGE)], "jupyter_dss_containers."):
        if module.name.rsplit(".", 1)[-1] == "__main__":  # runs an application when imported
            continue
        loaded = importlib.import_module(module.name)
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if cls.__module__ != loaded.__name__ or not issubclass(cls, HasTraits):
                continue
            for name, trait in cls.class_own_traits().items():
                if new_only and any(
                    issubclass(base, HasTraits) and name in base.class_traits()
                    for base in cls.__mro__[1:]
                ):
                    continue
                found.append((cls.__name__, name, trait))
    return found


def test_the_inventory_finds_the_known_knobs():
    """Guards the inventory itself: a walk that imported nothing would pass the others."""
    names = {f"{cls}.{name}" for cls, name, _ in declared_traits()}
    for known in (
        "ContainerProvisioner.launch_timeout",
        "WarmPool.ready_timeout",
        "JobService.stop_grace_seconds",
        "DSSContainersExtension.warm_pool_class",
    ):
        assert known in names


def test_every_trait_is_in_help_all_or_the_readme():
    """A configurable trait must show in ``--help-all`` (its class's help, with a help
    string) or be named in README.md; one the extension sets itself (not configurable)
    still says in its help what it is for."""
    classes = {}
    for module in pkgutil.walk_packages([str(PACKAGE)], "jupyter_dss_containers."):
        if module.name.rsplit(".", 1)[-1] != "__main__":
            loaded = importlib.import_module(module.name)
            classes.update({c.__name__: c for _, c in inspect.getmembers(loaded, inspect.isclass)})
    hidden = []
    for cls, name, trait in declared_traits():
        if trait.metadata.get("config"):
            shown = trait.help and f"{cls}.{name}" in classes[cls].class_get_help()
            if not shown and name not in README:
                hidden.append(f"{cls}.{name}")
        elif not trait.help:
            hidden.append(f"{cls}.{name} (set by code, no help)")
    assert not hidden, f"neither in --help-all nor in README.md: {hidden}"


def test_every_trait_is_read_somewhere():
    """A trait whose name appears nowhere in the package but its own declaration is a knob
    that does nothing (what ``launch_timeout`` was); one redefining a base class's trait
    (jupyter_server's ``delete_to_trash``) is read by that base."""
    sources = {p: p.read_text().splitlines() for p in PACKAGE.rglob("*.py")}
    unread = []
    for cls, name, _ in declared_traits(new_only=True):
        use = re.compile(rf"\.{re.escape(name)}\b|[\"']{re.escape(name)}[\"']")
        declaration = re.compile(rf"^\s*{re.escape(name)}\s*=\s*[A-Z]\w*\(")
        if not any(
            use.search(line) and not declaration.match(line)
            for lines in sources.values()
            for line in lines
        ):
            unread.append(f"{cls}.{name}")
    assert not unread, f"declared but never read: {unread}"
