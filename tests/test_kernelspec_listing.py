"""The kernel picker's listing (``GET /api/kernelspecs``): built once, off the event loop.

No server needed: :class:`ContainerKernelSpecManager` on a config file of several execution
configs, code environments and an R base image, as ``benchmarks/config_reads.py`` times it.
"""

from __future__ import annotations

import inspect

import pytest

from jupyter_dss_containers import kernelspecs
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager

CONFIG = """
code_envs:
  sk: {packages: [scikit-learn==1.5.2], available_for: all}
base_images:
  with-r: {bootstrap: debian, with_r: true}
execution_configs:
  a: {backend: docker, image: default, permissions: {groups: ["*"]}}
  b: {backend: docker, image: with-r, permissions: {groups: ["*"]}}
  c: {backend: docker, image: with-r, permissions: {groups: ["*"]}}
"""


@pytest.fixture
def manager(tmp_path) -> ContainerKernelSpecManager:
    path = tmp_path / "dss_containers.yaml"
    path.write_text(CONFIG)
    return ContainerKernelSpecManager(dss_config_file=str(path))


async def test_the_listing_matches_the_lookups_of_each_name(manager):
    """Guards the listing's own code path: every name the picker finds is listed, each with
    the spec its own lookup (``GET /api/kernelspecs/<name>``, a kernel start) gives."""
    assert inspect.iscoroutinefunction(manager.get_all_specs)  # jupyter_server awaits it
    listed = await manager.get_all_specs()
    found = manager.find_kernel_specs()
    assert set(listed) == set(found)
    assert {"dss-a", "dss-a-sk", "dss-b", "dss-b-r", "dss-c-sk-r"} <= set(listed)
    for name, entry in listed.items():
        assert entry["resource_dir"] == found[name]
        assert entry["spec"] == manager.get_kernel_spec(name).to_dict(), name
    assert manager.all_specs() == listed


async def test_one_listing_reads_the_config_file_and_builds_the_specs_once(manager, monkeypatch):
    """Guards against the quadratic listing: jupyter_client's ``get_all_specs`` asks
    ``get_kernel_spec`` for every name, and each of those rebuilt every container spec
    (12 configs: 31 ms a listing; 48: 205 ms, on the event loop)."""
    calls = {"load": 0, "build": 0}
    load, build = kernelspecs.load_config, kernelspecs.container_kernel_specs

    def counted_load(*args, **kwargs):
        calls["load"] += 1
        return load(*args, **kwargs)

    def counted_build(*args, **kwargs):
        calls["build"] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(kernelspecs, "load_config", counted_load)
    monkeypatch.setattr(kernelspecs, "container_kernel_specs", counted_build)
    listed = await manager.get_all_specs()
    # (other suites' installed dss-* specs may be listed too: this file's 10 at least)
    assert len([n for n in listed if n.startswith("dss-")]) >= 10
    assert calls == {"load": 1, "build": 1}
