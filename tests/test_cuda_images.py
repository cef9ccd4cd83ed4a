"""CUDA images built offline: NVIDIA's PyPI wheels in a bootstrapped image's venv.

The pure part: the pinned sets (one table, ``cudasets``), what goes into the content hash,
the config errors and the create request of a kernel on such an image. The engine part
builds a real ``with_cuda`` image here, with no GPU and no registry (CUDA 12.9, runtime only,
so CI stays fast), and loads ``libcudart.so.12`` in it with ``ctypes`` by its soname alone.
A machine with a GPU runs ``benchmarks/gpu_check.sh`` for the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import docker.errors
import pytest
import yaml

from jupyter_dss_containers import cudasets, images
from jupyter_dss_containers.backends.base import WorkloadSpec
from jupyter_dss_containers.backends.docker.containers import create_args
from jupyter_dss_containers.config import BaseImageSpec, ConfigError, parse_config
from jupyter_dss_containers.images import cuda as image_cuda
from jupyter_dss_containers.images.recipe import customize_hooks, image_content, rootfs_tag

#: what the engine test builds (its wheel is in tests/wheelhouse.py's sets)
TEST_SPEC = BaseImageSpec(
    name="test-cuda",
    bootstrap="debian",
    with_cuda=True,
    cuda_version="12.9",
    cuda_libraries=("runtime",),
)

# --------------------------------------------------------------------------- the table


def test_every_cuda_version_pins_every_library_and_each_has_a_soname():
    """Guards a table edit that leaves a library without a version (a KeyError at build
    time, on one site only) or without the soname the build checks it by."""
    assert cudasets.DEFAULT_VERSION in cudasets.VERSIONS
    for version, table in cudasets.VERSIONS.items():
        assert set(table) == set(cudasets.PACKAGES), version
    assert set(cudasets.SONAMES) == set(cudasets.PACKAGES)
    assert set(cudasets.DEFAULT_LIBRARIES) <= set(cudasets.PACKAGES)
    for needs in cudasets.NEEDS.values():
        assert set(needs) <= set(cudasets.PACKAGES)


def test_libraries_are_closed_over_what_their_wheels_need_and_always_hold_the_runtime():
    """Guards a set whose wheels need others at no pinned version (pip would then take the
    newest cuBLAS for a CUDA 12.4 cuDNN) and a set without libcudart."""
    assert cudasets.libraries(["cudnn"]) == ("runtime", "cublas", "cudnn")
    assert cudasets.libraries(["cusolver"]) == (
        "runtime",
        "cublas",
        "cusolver",
        "cusparse",
        "nvjitlink",
    )
    assert cudasets.libraries(None) == cudasets.DEFAULT_LIBRARIES
    assert cudasets.libraries("all") == tuple(cudasets.PACKAGES)
    assert cudasets.pins("12.4", ["runtime"]) == ["nvidia-cuda-runtime-cu12==12.4.127"]
    assert cudasets.pins(None, ["nvrtc"]) == [
        "nvidia-cuda-runtime-cu12==12.9.79",
        "nvidia-cuda-nvrtc-cu12==12.9.86",
    ]


def test_the_test_wheelhouse_holds_the_engine_tests_pins():
    """Guards the table and the set-up's wheel list drifting apart (the engine test would
    then fail offline for a missing wheel, far from the cause)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from wheelhouse import ENV_SETS

    assert image_cuda.cuda_requirements(TEST_SPEC) in ENV_SETS


# --------------------------------------------------------------------------- the recipe


def test_cuda_wheels_go_into_the_venv_with_the_kernel_and_the_linker_finds_them():
    """Guards the wheels missing from the bootstrap's pip run or from its wheelhouse (both
    read ``requirements``), and the image without the ``ld.so.conf.d`` entry."""
    spec = replace(TEST_SPEC, cuda_libraries=("runtime", "nvrtc"))
    wanted = images.wheels.requirements(spec)
    assert wanted == ["ipykernel==7.4.0", *cudasets.pins("12.9", ["nvrtc"])]
    hooks = customize_hooks(spec, Path("/w"))
    [pip] = [h for h in hooks if "pip install" in h]
    assert "nvidia-cuda-runtime-cu12==12.9.79" in pip and "nvidia-cuda-nvrtc-cu12==12.9.86" in pip
    later = hooks[hooks.index(pip) + 1 :]
    assert any(image_cuda.LD_CONF in h and "ldconfig" in h for h in later)
    assert any("libcudart.so.12" in h and "libnvrtc.so.12" in h for h in later)
    # an image named by from: (nvidia/cuda) brings its own CUDA: no wheels
    pulled = replace(TEST_SPEC, bootstrap=None, from_image=images.CUDA_DEFAULT_FROM)
    assert image_cuda.cuda_requirements(pulled) == []
    assert "nvidia-cuda" not in images.render_dockerfile(pulled, True)


def test_content_tags_change_with_cuda_version_and_library_set_only():
    """Guards a content hash that leaves the CUDA set out (a 12.4 image would be served as
    the 12.9 one), and one that moved the tags of images without CUDA."""
    other_version = replace(TEST_SPEC, cuda_version="12.4")
    more_libraries = replace(TEST_SPEC, cuda_libraries=("runtime", "nvrtc"))
    tags = {images.base_image_tag(s) for s in (TEST_SPEC, other_version, more_libraries)}
    rootfs = {rootfs_tag(s) for s in (TEST_SPEC, other_version, more_libraries)}
    assert len(tags) == 3 and len(rootfs) == 3
    assert images.base_image_tag(TEST_SPEC) == images.base_image_tag(replace(TEST_SPEC))
    plain = BaseImageSpec(name="default", bootstrap="debian")
    assert "cuda_version" not in image_content(plain)["spec"]
    assert "cuda" not in image_content(plain)["rootfs"]


# --------------------------------------------------------------------------- config


def _config(base: dict) -> dict:
    return {
        "base_images": {"gpu": {"bootstrap": "debian", **base}},
        "execution_configs": {"gpu": {"backend": "docker", "image": "gpu"}},
    }


@pytest.mark.parametrize(
    "base, path, expected",
    [
        (
            {"with_cuda": True, "cuda_version": "11.8"},
            "base_images.gpu.cuda_version",
            r"expected one of '12.4', .*'12.9'.*got '11.8'",
        ),
        (
            {"with_cuda": True, "cuda_version": 11.8},
            "base_images.gpu.cuda_version",
            r"got 11.8 \(quote it in YAML",
        ),
        (
            {"with_cuda": True, "cuda_libraries": ["runtime", "cudart"]},
            r"base_images.gpu.cuda_libraries\[1\]",
            r"expected one of runtime, nvrtc, cublas, .*got 'cudart'",
        ),
        (
            {"cuda_version": "12.9"},
            "base_images.gpu.cuda_version",
            "expected only with with_cuda: true",
        ),
        (
            {"with_cuda": True, "cuda_libraries": "most"},
            "base_images.gpu.cuda_libraries",
            "expected 'all', or a list",
        ),
    ],
)
def test_bad_cuda_settings_are_refused_naming_file_path_and_what_was_expected(base, path, expected):
    """Guards a typo'd CUDA version or library reaching the build (a pip error about a
    package name, at the first kernel start) instead of the config check."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(base), "/etc/dss/gpu.yaml")
    message = str(caught.value)  # one line per problem: file, path, what was expected
    assert re.search(rf"^/etc/dss/gpu.yaml: {path}: .*{expected}", message, re.M), message


def test_cuda_settings_on_a_pulled_image_are_refused_and_yaml_numbers_are_read_as_text():
    """Guards ``cuda_version`` silently ignored on a ``from:`` image, and ``12.4`` unquoted
    in YAML (a float) refused or read as another version."""
    data = _config({"with_cuda": True, "cuda_version": "12.4"})
    data["base_images"]["gpu"].pop("bootstrap")
    data["base_images"]["gpu"]["from"] = images.CUDA_DEFAULT_FROM
    with pytest.raises(ConfigError, match=r"cuda_version: expected only with bootstrap: debian"):
        parse_config(data, "gpu.yaml")
    text = "base_images: {gpu: {bootstrap: debian, with_cuda: true, cuda_version: 12.4}}"
    config_file = parse_config(yaml.safe_load(text), "gpu.yaml")
    spec = config_file.base_images["gpu"]
    assert spec.cuda_version == "12.4"
    assert image_cuda.cuda_requirements(spec)[0] == "nvidia-cuda-runtime-cu12==12.4.127"


def test_a_kernel_on_an_offline_cuda_image_asks_the_daemon_for_gpus():
    """Guards the GPU request lost for configs on a bootstrapped CUDA image (the kernel
    would start, on a GPU host, with no GPU in it): the create request carries a device
    request for the ``gpu`` capability; a config on a plain image carries none."""
    data = _config({"with_cuda": True, "cuda_libraries": ["runtime"]})
    data["execution_configs"]["cpu"] = {"backend": "docker", "image": "default"}
    config_file = parse_config(data, "gpu.yaml")
    config = config_file.get("gpu")
    image = images.resolve_image(config_file, config)
    assert image == images.base_image_tag(config_file.base_images["gpu"])
    spec = WorkloadSpec(name="dss-test-cuda", image=image, command=["true"], labels={})
    args = create_args(config, spec, api_version="1.41", user="1000:100")
    [device] = args["host_config"]["DeviceRequests"]
    assert device["Capabilities"] == [["gpu"]]
    assert args["image"] == image
    cpu = create_args(config_file.get("cpu"), spec, api_version="1.41", user="1000:100")
    assert "DeviceRequests" not in cpu["host_config"]


# --------------------------------------------------------------------------- engine

#: run in the image as its user: load libcudart by soname, ask its version and the GPUs
PROBE = r"""
import ctypes, json, os
import nvidia.cuda_runtime
lib = ctypes.CDLL("libcudart.so.12")
version, count = ctypes.c_int(0), ctypes.c_int(-1)
print(json.dumps({
    "loaded": lib._name,
    "version_rc": lib.cudaRuntimeGetVersion(ctypes.byref(version)),
    "version": version.value,
    "count_rc": lib.cudaGetDeviceCount(ctypes.byref(count)),
    "count": count.value,
    "ld_conf": open("/etc/ld.so.conf.d/dss-cuda.conf").read().split(),
    "package": os.path.dirname(nvidia.cuda_runtime.__path__[0]),
    "uid": os.getuid(),
}))
"""


@pytest.mark.timeout(900)
def test_offline_cuda_image_builds_and_loads_libcudart(docker_client, tmp_path):
    """Guards the offline CUDA build end to end: the wheels of the chosen CUDA version land
    in the venv of an image built with no registry, the linker finds ``libcudart.so.12`` by
    its soname (ctypes, as the image's user), and it is the pinned 12.9 runtime. With no GPU
    here ``cudaGetDeviceCount`` fails, which is expected; the size is reported by the CLI."""
    refs = (images.base_image_tag(TEST_SPEC), images.friendly_tag(TEST_SPEC))
    _remove(docker_client, *refs)  # built now, not found from an earlier run
    try:
        _check_built(docker_client, tmp_path)
    finally:
        _remove(docker_client, *refs)  # the root file system stays cached, as for the others


def _remove(client, *refs: str) -> None:
    for ref in refs:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.api.remove_image(ref, force=True)


def _check_built(docker_client, tmp_path: Path) -> None:
    tag = images.build_base_image(TEST_SPEC, docker_client)
    out = docker_client.containers.run(
        tag, ["python", "-c", PROBE], network_mode="none", remove=True
    )
    probe = json.loads(out.decode().strip().splitlines()[-1])
    assert probe["loaded"] == "libcudart.so.12" and probe["uid"] == 1000
    assert probe["version_rc"] == 0 and probe["version"] == 12090
    print(f"cudaGetDeviceCount here: rc={probe['count_rc']} count={probe['count']}")
    assert probe["count_rc"] != 0 or probe["count"] > 0  # no GPU: an error, not 0 devices
    [folder] = probe["ld_conf"]
    assert folder.startswith(images.VENV) and folder.endswith("/nvidia/cuda_runtime/lib")
    labels = docker_client.images.get(tag).labels
    assert labels[image_cuda.LABEL_CUDA] == "12.9"

    config = tmp_path / "gpu.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base_images": {
                    "test-cuda": {
                        "bootstrap": "debian",
                        "with_cuda": True,
                        "cuda_version": "12.9",
                        "cuda_libraries": ["runtime"],
                    }
                },
                "execution_configs": {"gpu": {"backend": "docker", "image": "test-cuda"}},
            }
        )
    )
    cli = [sys.executable, "-c", "from jupyter_dss_containers.cli import main; main()"]
    env = {**os.environ, "COLUMNS": "200"}
    built = subprocess.run(
        [*cli, "build-base-image", "test-cuda", f"--config={config}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    size = docker_client.images.get(tag).attrs["Size"]
    assert f"built test-cuda: {tag} ({size / 1024**2:.1f} MiB)" in built.stdout
    listed = subprocess.run(
        [*cli, "images", f"--config={config}", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    [state] = [s for s in json.loads(listed.stdout) if s["name"] == "test-cuda"]
    assert state["state"] == "built" and state["size"] == size
    print(f"offline CUDA image {tag}: {size / 1024**2:.1f} MiB")
