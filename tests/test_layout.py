"""The package's shape as tests that can fail (issue 13): every module imports on its own,
module-level imports form no cycle, and no module is over 500 lines. No engine needed.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import jupyter_dss_containers

PACKAGE = Path(jupyter_dss_containers.__file__).parent
NAME = "jupyter_dss_containers"
MAX_LINES = 500
#: modules allowed over MAX_LINES for now, each with the issue that shrinks it (none)
OVER_THE_LIMIT: frozenset[str] = frozenset()
#: modules that do something when imported (``python -m``), so are never imported here
RUN_ON_IMPORT = frozenset({f"{NAME}.launcherd.__main__"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported: the top level and the blocks of
    top-level ``try``/``if`` (not ``if TYPE_CHECKING``), never function bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            todo += node.orelse if _is_type_checking(node.test) else node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                todo += handler.body
    return found


def import_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules its module-level imports load (pure, from the AST)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                bases = [alias.name for alias in node.names]
                names: list[str] = []
            else:
                if node.level:
                    anchor = here[: len(here) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                bases = [base]
                names = [alias.name for alias in node.names]
            for base in bases:
                submodules = {f"{base}.{a}" for a in names} & modules.keys()
                targets |= submodules  # ``from pkg import submodule`` loads the submodule
                if base in modules and (not names or len(submodules) < len(names)):
                    targets.add(base)  # a name of the package's own ``__init__``
        targets.discard(name)
        edges[name] = targets
    return edges


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


_IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == sys.argv[2] or m.startswith(sys.argv[2] + ".")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def test_every_module_imports_on_its_own():
    """Guards: a module that imports only after another one was loaded first (an import
    cycle the usual entry points hide, a missing dependency): each module is imported in a
    fresh interpreter's state of the package (every package module dropped from
    ``sys.modules`` before it), all in one subprocess."""
    names = sorted(set(package_modules()) - RUN_ON_IMPORT)
    assert len(names) > 100  # the walk found the package, not an empty folder
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names), NAME],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name}:\n{why}" for name, why in failed.items())


def test_module_level_imports_form_no_cycle():
    """Guards: a cycle of module-level imports inside the package (it breaks, or not, by
    which module is imported first); imports inside functions are the way out and do not
    count."""
    edges = import_edges(package_modules())
    assert f"{NAME}.imagecontract" in edges[f"{NAME}.workspace"]  # relative imports read
    assert import_cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    """Guards: the cycle check passing because its finder sees nothing."""
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_over_500_lines():
    """Guards: a module growing past the issue's bound of 500 lines (list an exception in
    ``OVER_THE_LIMIT`` with the issue that will shrink it, rather than raising the bound)."""
    modules = package_modules()
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules.items()}
    over = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in OVER_THE_LIMIT}
    assert not over, f"over {MAX_LINES} lines: {over}"
    assert not OVER_THE_LIMIT - set(modules), "an exception names no module"


def test_the_old_import_paths_are_the_real_objects():
    """Guards: the re-exporting modules kept for old import paths (README changelog)
    drifting from their real homes, or losing a name."""
    from jupyter_dss_containers import codeenvs, envrecipe, imagecontract, registry
    from jupyter_dss_containers.images import codeenv, contract, inventory
    from jupyter_dss_containers.images import envrecipe as real_envrecipe
    from jupyter_dss_containers.images import registry as real_registry

    for shim, real in ((envrecipe, real_envrecipe), (contract, imagecontract)):
        assert shim.__all__ == real.__all__
        assert all(getattr(shim, n) is getattr(real, n) for n in real.__all__)
    assert registry.pull_image is real_registry.pull_image
    assert registry.qualified is real_registry.qualified
    assert codeenvs.build_env_image is codeenv.build_env_image
    assert codeenvs.image_states is inventory.image_states
