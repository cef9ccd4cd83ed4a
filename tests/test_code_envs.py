"""Code-env images, R base images, registries and CUDA settings, on the real engine.

Envs are built for real (wheels from ``pip download`` on the host, installed offline in a
container of the base image), kernels run in them through plain jupyter_client, images
go to and come back from a real ``docker-registry`` on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import docker.errors
import pytest
import requests
import yaml
from conftest import need
from jupyter_client import AsyncKernelManager

from jupyter_dss_containers import images
from jupyter_dss_containers.backends.base import WorkloadSpec
from jupyter_dss_containers.backends.docker import create_args
from jupyter_dss_containers.config import (
    DATA_SCIENCE_PACKAGES,
    EMBEDDED_DEFAULT,
    BaseImageSpec,
    ConfigError,
    load_config,
    parse_config,
)
from jupyter_dss_containers.images import codeenv, inventory, registry
from jupyter_dss_containers.images.envrecipe import CodeEnvError
from jupyter_dss_containers.kernelspecs import R_ARGV, ContainerKernelSpecManager
from jupyter_dss_containers.provisioner import KernelStartError

pytestmark = pytest.mark.docker

REGISTRY_BIN = "/usr/bin/docker-registry"
CONNECTION_FILE = "/tmp/.dss-kernel/connection.json"  # where the provisioner writes it


def site_config(port: int | None = None, six_pin: str = "six==1.16.0") -> dict:
    configs = {
        "small": {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}},
        "rlang": {"backend": "docker", "image": "with-r", "permissions": {"groups": ["*"]}},
        "broken": {"backend": "docker", "image": "broken", "permissions": {"groups": ["*"]}},
    }
    if port:
        configs["pushed"] = {
            "backend": "docker",
            "image": "default",
            "registry": f"127.0.0.1:{port}/team",
            "permissions": {"groups": ["*"]},
        }
    return {
        "base_images": {
            "with-r": {"bootstrap": "debian", "with_r": True},
            "broken": {
                "bootstrap": "debian",
                "dockerfile_append": "RUN echo fragment-ran && exit 3",
            },
        },
        "code_envs": {
            "sk": {"packages": ["scikit-learn==1.5.2"], "available_for": ["small"]},
            "tiny": {"packages": [six_pin], "available_for": "all"},
            "other": {"packages": ["six==1.16.0"], "available_for": ["small"]},
            "never": {"packages": ["six==1.15.0"], "available_for": ["small"]},
            "ghost": {"packages": ["dss-no-such-package-xyz==1.0"], "available_for": ["small"]},
        },
        "execution_configs": configs,
    }


def write_config(folder: Path, data: dict, name: str = "envs.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def site(workspace, base_image) -> Path:
    return write_config(workspace, site_config())


@pytest.fixture(scope="module")
def r_base(docker_client, site) -> str:
    """The R base image (bootstrap debian, with_r): ~2 min the first time, then cached."""
    spec = load_config(site).base_images["with-r"]
    return images.build_base_image(spec, docker_client)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory, docker_client) -> int:
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1:<free port>, own storage."""
    if not Path(REGISTRY_BIN).exists():
        need(f"{REGISTRY_BIN} is missing (apt-get install docker-registry)")
    folder = tmp_path_factory.mktemp("registry")
    port = _free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    log = (folder / "registry.log").open("w")
    proc = subprocess.Popen(
        [REGISTRY_BIN, "serve", str(folder / "config.yml")], stdout=log, stderr=log
    )
    try:
        for _ in range(100):
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None:
                pytest.fail(f"docker-registry exited: {(folder / 'registry.log').read_text()}")
            time.sleep(0.1)
        else:
            pytest.fail(f"docker-registry never answered: {(folder / 'registry.log').read_text()}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for image in docker_client.api.images():  # the tags naming this registry only
            for tag in image.get("RepoTags") or []:
                if tag.startswith(f"127.0.0.1:{port}/"):
                    with contextlib.suppress(docker.errors.APIError):
                        docker_client.api.remove_image(tag, noprune=True)


async def run_in_kernel(ksm, kernel_name: str, code: str) -> str:
    """Start the kernel, run ``code``; return what it printed, its results and errors."""
    km = AsyncKernelManager(kernel_name=kernel_name, kernel_spec_manager=ksm)
    await km.start_kernel()
    kc = km.client()
    out: list[str] = []

    def collect(msg):
        content = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            out.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            out.append(f"{content['ename']}: {content['evalue']}")

    try:
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        await kc.execute_interactive(code, timeout=60, output_hook=collect)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return "".join(out)


def _tags(client: docker.DockerClient, repository: str) -> set[str]:
    return {t for i in client.api.images(name=repository) for t in i.get("RepoTags") or []}


# --------------------------------------------------------------------------- R


async def test_r_kernel_evaluates_version_string(r_base, docker_client, site):
    """IRkernel 1.3 from Debian, uid 1000, connection file written before start."""
    assert "IRkernel::main()" in R_ARGV
    ksm = ContainerKernelSpecManager(dss_config_file=str(site))
    spec = ksm.get_kernel_spec("dss-rlang-r")
    assert spec.display_name == "R (rlang)" and spec.language == "R"
    assert "dss-small-r" not in ksm.find_kernel_specs()  # no R in the default image
    code = (
        'cat(R.version.string, "\\n"); cat(as.character(packageVersion("IRkernel")), "\\n"); '
        f'cat(system("id -u", intern = TRUE), file.exists("{CONNECTION_FILE}"), "\\n")'
    )
    out = await run_in_kernel(ksm, "dss-rlang-r", code)
    assert "R version 4." in out
    assert "1.3" in out
    assert "1000 TRUE" in out


# --------------------------------------------------------------------------- envs


@pytest.fixture(scope="module")
def sk_image(docker_client, site) -> str:
    events: list[images.BuildEvent] = []
    result = codeenv.build_env_image(load_config(site), "sk", "small", docker_client, events.append)
    steps = {e.step for e in events}
    assert ("install" in steps and "done" in steps) or steps == {"cached"}
    return result.tag


async def test_sklearn_env_kernel_has_its_pin_and_base_kernel_the_base_one(sk_image, site):
    """The env's layer wins over the base image's own scikit-learn (the default base image
    carries DATA_SCIENCE_PACKAGES); the base kernel keeps the base's pin."""
    base_pin = next(p for p in DATA_SCIENCE_PACKAGES if p.startswith("scikit-learn=="))
    ksm = ContainerKernelSpecManager(dss_config_file=str(site))
    specs = ksm.find_kernel_specs()
    assert "dss-small-sk" in specs and "dss-small" in specs
    assert "dss-rlang-sk" not in specs  # sk is available for small only
    code = "import sklearn; print('sklearn', sklearn.__version__)"
    assert "sklearn 1.5.2" in await run_in_kernel(ksm, "dss-small-sk", code)
    base = await run_in_kernel(ksm, "dss-small", code)
    assert base.strip() == f"sklearn {base_pin.split('==')[1]}", base


def test_changing_one_pin_rebuilds_only_that_env(docker_client, workspace, base_image):
    before = parse_config(site_config(), "before.yaml")
    after = parse_config(site_config(six_pin="six==1.17.0"), "after.yaml")
    with contextlib.suppress(docker.errors.ImageNotFound):  # left by an earlier run
        docker_client.api.remove_image(images.resolve_image(after, after.get("small"), "tiny"))
    old_tiny = codeenv.build_env_image(before, "tiny", "small", docker_client).tag
    other = codeenv.build_env_image(before, "other", "small", docker_client)

    rebuilt = codeenv.build_env_image(after, "tiny", "small", docker_client)
    again = codeenv.build_env_image(after, "other", "small", docker_client)
    assert rebuilt.built and rebuilt.tag != old_tiny
    assert not again.built and again.tag == other.tag
    assert not codeenv.build_env_image(after, "tiny", "small", docker_client).built
    out = docker_client.containers.run(
        rebuilt.tag, ["python", "-c", "import six; print(six.__version__)"], remove=True
    )
    assert out.decode().strip() == "1.17.0"

    states = {
        (s.name, s.ref): s.state
        for s in inventory.image_states(after, docker_client)
        if s.kind == "env" and s.config == "small"
    }
    assert states[("tiny", rebuilt.tag)] == "built"
    assert states[("tiny", old_tiny)] == "stale"
    assert states[("other", other.tag)] == "built"
    assert ("never", images.resolve_image(after, after.get("small"), "never")) in states


def test_images_and_build_env_commands(docker_client, workspace, base_image):
    path = write_config(workspace, site_config(), "cli.yaml")
    codeenv.build_env_image(load_config(path), "tiny", "small", docker_client)
    cli = [sys.executable, "-c", "from jupyter_dss_containers.cli import main; main()"]
    env = {**os.environ, "DSS_CONTAINERS_CONFIG": str(path)}
    built = subprocess.run(
        [*cli, "build-env", "tiny", "--config", "small"], capture_output=True, text=True, env=env
    )
    assert built.returncode == 0, built.stderr
    assert "up to date" in built.stdout and "cached" in built.stderr  # the progress display
    listed = subprocess.run([*cli, "images", "--json"], capture_output=True, text=True, env=env)
    rows = json.loads(listed.stdout)
    tiny = next(r for r in rows if r["name"] == "tiny" and r["config"] == "small")
    assert tiny["state"] == "built" and tiny["size"] > 0 and tiny["age_seconds"] >= 0
    assert any(r["name"] == "never" and r["state"] == "missing" for r in rows)
    bad = subprocess.run([*cli, "build-env", "nope"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    assert "no code environment named 'nope'" in bad.stderr and "defined: ghost" in bad.stderr


# --------------------------------------------------------------------------- registry


def test_push_to_and_pull_from_a_local_registry(docker_client, workspace, local_registry):
    config_file = parse_config(site_config(local_registry), "registry.yaml")
    result = codeenv.build_env_image(config_file, "tiny", "pushed", docker_client)
    assert result.push is not None
    remote = result.push.ref
    assert remote.startswith(f"127.0.0.1:{local_registry}/team/dss-containers/env-tiny:pushed-")
    assert images.resolve_image(config_file, config_file.get("pushed"), "tiny") == remote

    # the registry itself serves the manifest under the digest the push reported
    repository, tag = registry.split_ref(remote)
    path = repository.split("/", 1)[1]
    answer = requests.head(
        f"http://127.0.0.1:{local_registry}/v2/{path}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["Docker-Content-Digest"] == result.push.digest

    docker_client.api.remove_image(remote)  # the local image keeps its own tag
    assert not images.image_exists(docker_client, remote)
    assert registry.pull_image(docker_client, remote, result.push.digest) == result.push.digest
    assert images.image_exists(docker_client, result.push.pinned)
    with pytest.raises(registry.RegistryError, match=r"digest .* != expected sha256:0000"):
        registry.pull_image(docker_client, remote, "sha256:" + "0" * 64)
    with pytest.raises(registry.RegistryError, match=r"pulling .*no-such-env"):
        registry.pull_image(docker_client, f"127.0.0.1:{local_registry}/team/no-such-env:1")

    # build-base-image pushes a base image to the registries of the configs that run it
    path = write_config(workspace, site_config(local_registry), "registry.yaml")
    env = {**os.environ, "DSS_CONTAINERS_CONFIG": str(path)}
    cli = [sys.executable, "-c", "from jupyter_dss_containers.cli import main; main()"]
    done = subprocess.run(
        [*cli, "build-base-image", "default"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    base_remote = images.resolve_image(config_file, config_file.get("pushed"))
    assert base_remote == f"127.0.0.1:{local_registry}/team/{base_image_tag_of(config_file)}"
    assert f"pushed default: {registry.split_ref(base_remote)[0]}@sha256:" in done.stdout


async def test_daemon_without_the_image_pulls_it_from_the_registry(
    docker_client, workspace, local_registry
):
    """A kernel start on a daemon that lacks the image pulls it from the config's registry."""
    from jupyter_client import AsyncKernelManager

    from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager

    path = write_config(workspace, site_config(local_registry), "pull.yaml")
    config_file = parse_config(site_config(local_registry), str(path))
    remote = codeenv.build_env_image(config_file, "tiny", "pushed", docker_client).push.ref
    docker_client.api.remove_image(remote)  # as on a remote daemon that never had it
    ksm = ContainerKernelSpecManager(dss_config_file=str(path))
    km = AsyncKernelManager(kernel_name="dss-pushed-tiny", kernel_spec_manager=ksm)
    await km.start_kernel()
    try:
        assert images.image_exists(docker_client, remote)
        attrs = docker_client.api.inspect_container(km.provisioner.workload_id)
        assert attrs["Config"]["Image"] == remote
    finally:
        await km.shutdown_kernel(now=True)


def base_image_tag_of(config_file) -> str:
    return images.base_image_tag(config_file.base_images["default"])


# --------------------------------------------------------------------------- CUDA


def test_cuda_base_dockerfile_and_create_request(docker_client):
    spec = BaseImageSpec(
        name="gpu", from_image=images.CUDA_DEFAULT_FROM, with_cuda=True, with_r=True
    )
    dockerfile = images.render_dockerfile(spec, wheelhouse_present=True)
    assert dockerfile.startswith(f"FROM {images.CUDA_DEFAULT_FROM}\n")
    assert "r-cran-irkernel" in dockerfile and "library(IRkernel)" in dockerfile
    assert not images.is_bootstrap(spec)

    config_file = parse_config(
        {
            "base_images": {"cuda": {"bootstrap": "debian", "with_cuda": True}},
            "execution_configs": {
                "gpu": {
                    "backend": "docker",
                    "image": "cuda",
                    "docker": {"runtime": "nvidia", "gpus": ["0", "1"]},
                },
                "any-gpu": {"backend": "docker", "image": "cuda"},
                "cpu": {"backend": "docker", "image": "default"},
            },
        },
        "gpu.yaml",
    )
    spec_ = WorkloadSpec(
        name=f"dss-test-cuda-{os.getpid()}",
        image=images.friendly_tag(BaseImageSpec("default")),
        command=["true"],
        labels={},
    )

    def create(name: str) -> dict:
        return create_args(config_file.get(name), spec_, api_version="1.41", user="1000:100")

    request = create("gpu")
    assert request["host_config"]["Runtime"] == "nvidia"
    [device] = request["host_config"]["DeviceRequests"]
    assert device["DeviceIDs"] == ["0", "1"] and device["Capabilities"] == [["gpu"]]
    # a config on a with_cuda base image gets every GPU by default; others get none
    [device] = create("any-gpu")["host_config"]["DeviceRequests"]
    assert device["Count"] == -1 and device["Capabilities"] == [["gpu"]]
    assert "DeviceRequests" not in create("cpu")["host_config"]
    # a bootstrapped CUDA image is built on its root file system (CUDA from NVIDIA's wheels)
    assert images.render_dockerfile(config_file.base_images["cuda"], False).startswith(
        "FROM dss-containers/rootfs:"
    )
    # this engine has no nvidia runtime: the daemon refuses the create, naming it
    with pytest.raises(docker.errors.APIError, match=r"(?i)runtime"):
        docker_client.api.create_container(**request)


# --------------------------------------------------------------------------- bad input


def test_unknown_or_unavailable_env_is_refused_by_name(site):
    config_file = load_config(site)
    with pytest.raises(CodeEnvError, match=r"no code environment named 'nope'.*defined: "):
        images.resolve_image(config_file, config_file.get("small"), "nope")
    with pytest.raises(CodeEnvError, match=r"'sk' is not available for .*'rlang'"):
        images.resolve_image(config_file, config_file.get("rlang"), "sk")
    data = site_config()
    data["code_envs"]["sk"]["available_for"] = ["small", "gpu-nowhere"]
    with pytest.raises(ConfigError, match=r"code_envs\.sk\.available_for\[1\]: .*'gpu-nowhere'"):
        parse_config(data, "bad.yaml")


async def test_kernel_of_an_unbuilt_env_names_the_build_command(site, base_image):
    ksm = ContainerKernelSpecManager(dss_config_file=str(site))
    km = AsyncKernelManager(kernel_name="dss-small-never", kernel_spec_manager=ksm)
    began = time.monotonic()
    with pytest.raises(KernelStartError) as info:
        await km.start_kernel()
    assert "jupyter dss-containers build-env never --config small" in str(info.value)
    assert time.monotonic() - began < 10


def test_package_that_does_not_exist_fails_with_the_log_tail(docker_client, site):
    config_file = load_config(site)
    tag = images.resolve_image(config_file, config_file.get("small"), "ghost")
    with pytest.raises(images.ImageBuildError) as info:
        codeenv.build_env_image(config_file, "ghost", "small", docker_client)
    message = str(info.value)
    assert message.startswith("building code env image 'ghost (small)' failed: pip download")
    assert "dss-no-such-package-xyz" in message.splitlines()[-1] or "No matching" in message
    assert not images.image_exists(docker_client, tag)
    assert not _tags(docker_client, "dss-containers/env-ghost")


def test_failing_dockerfile_fragment_leaves_no_tag(docker_client, site, base_image):
    config_file = parse_config(
        {**site_config(), "code_envs": {"tiny": {"packages": [], "available_for": "all"}}},
        "fragment.yaml",
    )
    base_tag = images.base_image_tag(config_file.base_images["broken"])
    env_tag = images.resolve_image(config_file, config_file.get("broken"), "tiny")
    with pytest.raises(images.ImageBuildError) as info:
        codeenv.build_env_image(config_file, "tiny", "broken", docker_client)
    message = str(info.value)
    assert message.startswith("building base image 'broken' failed")
    assert "fragment-ran" in message and "returned a non-zero code: 3" in message
    assert not images.image_exists(docker_client, base_tag)
    assert not images.image_exists(docker_client, env_tag)
    assert not _tags(docker_client, "dss-containers/base-broken")


def test_bootstrap_suite_table_matches_the_image(docker_client, base_image):
    """Env wheels for bootstrap bases are chosen from images.SUITES without running them."""
    suite = parse_config(EMBEDDED_DEFAULT, "embedded").base_images["default"].suite
    probed = images.probe_python(docker_client, base_image, images.BuildRun("default", None))
    assert probed == images.SUITES[suite]
