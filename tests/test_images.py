"""Base images, built for real on the local Docker engine (no mocks of the docker SDK).

The session fixture builds the embedded ``default`` base image once (a no-op when it is
already on the daemon); the other builds reuse its bootstrapped root file system or
start FROM it, so they take seconds.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace

import docker
import docker.errors
import pytest
from rich.console import Console

from jupyter_dss_containers.cli_progress import ConsoleProgress
from jupyter_dss_containers.config import (
    EMBEDDED_DEFAULT,
    BaseImageSpec,
    load_config,
    parse_config,
)
from jupyter_dss_containers.images import (
    CUDA_DEFAULT_FROM,
    IMAGE_REPO_PREFIX,
    KERNEL_PYTHON,
    LABEL_BASE_IMAGE,
    BuildEvent,
    ImageBuildError,
    base_image_tag,
    build_base_image,
    friendly_tag,
    image_exists,
    render_dockerfile,
    resolve_image,
)


@pytest.fixture(scope="session")
def docker_engine(docker_client) -> docker.DockerClient:
    """conftest's engine client (skipped without one, a failure under CI)."""
    return docker_client


@pytest.fixture(scope="session")
def default_base_image(docker_engine: docker.DockerClient) -> str:
    """The embedded default base image (``{bootstrap: debian}``), built once per content."""
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as empty:
        mp.delenv("DSS_CONTAINERS_CONFIG", raising=False)
        mp.setenv("JUPYTER_NO_CONFIG", "1")
        mp.setenv("JUPYTER_CONFIG_DIR", empty)
        spec = load_config(None).base_images["default"]
    return build_base_image(spec, docker_engine)


def _remove(client: docker.DockerClient, *refs: str) -> None:
    for ref in refs:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.api.remove_image(ref, force=True)


@contextlib.contextmanager
def _built(client: docker.DockerClient, spec: BaseImageSpec) -> Iterator[str]:
    """Build a throw-away base image and remove both its tags afterwards."""
    _remove(client, base_image_tag(spec), friendly_tag(spec))
    try:
        yield build_base_image(spec, client)
    finally:
        _remove(client, base_image_tag(spec), friendly_tag(spec))


def _run(client: docker.DockerClient, image: str, script: str) -> str:
    out = client.containers.run(image, ["sh", "-c", script], remove=True)
    return out.decode().strip()


# --------------------------------------------------------------------------- tags (no Docker)


def test_tag_is_deterministic_and_follows_content():
    spec = BaseImageSpec(name="tagged", bootstrap="debian")
    tag = base_image_tag(spec)
    assert tag == base_image_tag(BaseImageSpec(name="tagged", bootstrap="debian"))
    repository, _, digest = tag.rpartition(":")
    assert repository == f"{IMAGE_REPO_PREFIX}base-tagged"
    assert len(digest) == 12 and int(digest, 16) >= 0
    changed = [
        replace(spec, system_packages=("procps",)),
        replace(spec, python_packages=("six",)),
        replace(spec, with_r=True),
        replace(spec, suite="trixie"),
        replace(spec, dockerfile_append="RUN true"),
        replace(spec, dockerfile_prepend="ARG X=1"),
        replace(spec, name="other"),
    ]
    digests = {base_image_tag(s).rpartition(":")[2] for s in changed}
    assert digest not in digests and len(digests) == len(changed)
    assert base_image_tag(replace(spec, description="only words")) == tag
    assert friendly_tag(spec) == f"{IMAGE_REPO_PREFIX}base-tagged:latest"


def test_tag_follows_wheelhouse_contents_and_mirror(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "ipykernel-7.4.0-py3-none-any.whl").write_bytes(b"")
    spec = BaseImageSpec(name="wh", bootstrap="debian", wheelhouse=str(wheels))
    before = base_image_tag(spec)
    (wheels / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"")
    assert base_image_tag(spec) != before

    sources = tmp_path / "one.sources"
    sources.write_text(
        "Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm\nComponents: main\n"
    )
    monkeypatch.setenv("DSS_CONTAINERS_APT_SOURCES", str(sources))
    first = base_image_tag(spec)
    sources.write_text(sources.read_text().replace(":9/", ":10/"))
    assert base_image_tag(spec) != first


def test_resolve_image_maps_base_image_names_to_content_tags():
    config_file = parse_config(
        {
            "base_images": {"default": {"bootstrap": "debian"}},
            "execution_configs": {
                "named": {"backend": "docker", "image": "default"},
                "ref": {"backend": "docker", "image": "python:3.12-slim"},
            },
        },
        "<test>",
    )
    spec = config_file.base_images["default"]
    assert resolve_image(config_file, config_file.get("named")) == base_image_tag(spec)
    assert resolve_image(config_file, config_file.get("ref")) == "python:3.12-slim"


def test_cuda_dockerfile_starts_from_nvidia_cuda():
    """A ``from: nvidia/cuda`` CUDA image (sites that can pull) is the Dockerfile build on
    top of it; a bootstrapped one no longer is (its CUDA comes from wheels: test_cuda_images)."""
    spec = BaseImageSpec(
        name="gpu", from_image=CUDA_DEFAULT_FROM, with_cuda=True, system_packages=("git",)
    )
    dockerfile = render_dockerfile(spec, wheelhouse_present=True)
    lines = dockerfile.splitlines()
    assert "FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04" in lines
    assert "COPY wheelhouse/ /tmp/dss-wheelhouse/" in lines
    assert lines[-1] == "USER 1000:100"
    assert "git" in dockerfile and "tini" in dockerfile
    assert "nvidia-cuda-runtime" not in dockerfile  # the image brings its own CUDA
    own = replace(spec, from_image="nvidia/cuda:12.6.0-base-ubuntu24.04")
    assert "FROM nvidia/cuda:12.6.0-base-ubuntu24.04" in render_dockerfile(own, False)
    assert "--no-index" not in render_dockerfile(own, False)
    bootstrapped = replace(spec, from_image=None, bootstrap="debian")
    assert render_dockerfile(bootstrapped, False).startswith("FROM dss-containers/rootfs:")


def test_console_progress_prints_one_line_per_step():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    with ConsoleProgress(console) as progress:
        for step, message in [
            ("bootstrap", "mmdebstrap bookworm"),
            ("bootstrap", "I: [noise] line"),
            ("build", "Step 1/2 : FROM x"),
            ("done", "built it"),
        ]:
            progress(BuildEvent("demo", step, message, 0.5))
    text = out.getvalue()
    assert "mmdebstrap bookworm" in text and "built it" in text
    assert "[noise]" not in text  # a second line of the same step stays in the spinner


# --------------------------------------------------------------------------- real builds


def test_default_image_runs_ipykernel_as_uid_1000(docker_engine, default_base_image):
    out = _run(
        docker_engine,
        default_base_image,
        f"id -u; id -g; {KERNEL_PYTHON} -c 'import ipykernel; print(ipykernel.__version__)'; "
        "python -c 'import ipykernel'; command -v tini",
    )
    uid, gid, version, tini = out.splitlines()
    assert (uid, gid) == ("1000", "100")
    assert version
    assert tini.endswith("/tini")
    labels = docker_engine.images.get(default_base_image).labels
    assert labels[LABEL_BASE_IMAGE] == "default"
    assert image_exists(docker_engine, default_base_image.rpartition(":")[0] + ":latest")


def test_rebuilding_an_unchanged_image_is_a_no_op(docker_engine, default_base_image):
    spec = parse_config(EMBEDDED_DEFAULT, "embedded").base_images["default"]
    assert base_image_tag(spec) == default_base_image
    events: list[BuildEvent] = []
    started = time.monotonic()
    assert build_base_image(spec, docker_engine, progress=events.append) == default_base_image
    assert time.monotonic() - started < 5
    assert events[-1].step == "cached"
    assert {e.step for e in events} <= {"resolve", "cached"}


def test_bootstrap_image_applies_dockerfile_append(docker_engine, default_base_image):
    spec = BaseImageSpec(
        name="test-append", bootstrap="debian", dockerfile_append="RUN echo hi > /etc/dss-test"
    )
    with _built(docker_engine, spec) as tag:
        assert _run(docker_engine, tag, "cat /etc/dss-test; id -u") == "hi\n1000"
        assert image_exists(docker_engine, friendly_tag(spec))


def test_from_image_build_adds_a_system_package(docker_engine, default_base_image):
    spec = BaseImageSpec(
        name="test-from", from_image=default_base_image, system_packages=("procps",)
    )
    events: list[BuildEvent] = []
    _remove(docker_engine, base_image_tag(spec), friendly_tag(spec))
    try:
        tag = build_base_image(spec, docker_engine, progress=events.append)
        out = _run(docker_engine, tag, "id -u; ps --version; python -c 'import ipykernel'")
        assert out.splitlines()[0] == "1000"
        assert "procps-ng" in out
        assert any(e.step == "build" and "Step" in e.message for e in events)
        assert docker_engine.images.get(tag).labels[LABEL_BASE_IMAGE] == "test-from"
    finally:
        _remove(docker_engine, base_image_tag(spec), friendly_tag(spec))


@pytest.mark.parametrize("way", ["bootstrap", "from"])
def test_failing_fragment_raises_with_log_tail_and_leaves_no_tags(
    docker_engine, default_base_image, way
):
    fragment = "RUN echo about-to-fail-$((40 + 2)) && exit 3"
    if way == "bootstrap":
        spec = BaseImageSpec(name="test-fail", bootstrap="debian", dockerfile_append=fragment)
    else:
        spec = BaseImageSpec(
            name="test-fail", from_image=default_base_image, dockerfile_append=fragment
        )
    tags = (base_image_tag(spec), friendly_tag(spec))
    _remove(docker_engine, *tags)
    with pytest.raises(ImageBuildError) as caught:
        build_base_image(spec, docker_engine)
    message = str(caught.value)
    assert "test-fail" in message
    assert "about-to-fail-42" in message  # the log tail, not just the exit code
    assert "3" in message.splitlines()[-1]
    assert not any(image_exists(docker_engine, t) for t in tags)


def test_cleanup_images_removes_stale_builds_but_not_the_current_or_used_ones(
    docker_engine, default_base_image, tmp_path
):
    """Two builds of one base image: the older one goes, unless a container still uses it."""
    import subprocess
    import sys

    import yaml

    from jupyter_dss_containers.images import image_states, prune_stale_images

    path = tmp_path / "prune.yaml"

    def spec_for(version: str) -> BaseImageSpec:
        entry = {"from": default_base_image, "dockerfile_append": f"RUN echo {version} > /etc/v"}
        data = {
            "base_images": {"test-prune": entry},
            "execution_configs": {
                "p": {"backend": "docker", "image": "test-prune", "permissions": {"users": []}}
            },
        }
        path.write_text(yaml.safe_dump(data))
        return load_config(path).base_images["test-prune"]

    old_spec, new_spec = spec_for("one"), spec_for("two")
    with _built(docker_engine, old_spec) as old, _built(docker_engine, new_spec) as new:
        config_file = load_config(path)
        stale = [s.ref for s in image_states(config_file, docker_engine) if s.state == "stale"]
        assert old in stale and new not in stale
        user = docker_engine.containers.create(old, ["true"])
        try:
            removed, kept = prune_stale_images(config_file, docker_engine)
            assert old not in [s.ref for s in removed] and "a container uses it" in kept[old]
            assert image_exists(docker_engine, old)
        finally:
            user.remove(force=True)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from jupyter_dss_containers.cli import main; main()",
                "cleanup",
                "--images",
                "--config",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"removed image {old} (stale base test-prune)" in done.stdout
        assert not image_exists(docker_engine, old)
        assert image_exists(docker_engine, new) and image_exists(docker_engine, default_base_image)


def test_server_image_builds_other_than_latest_are_stale(docker_engine, default_base_image):
    """The server image ``:latest`` names is current and kept; an older build of that
    repository is stale and pruned (guards: old server images piling up, 1.3 GB each, or
    the current one removed)."""
    import uuid

    from jupyter_dss_containers.images.inventory import prune_states, server_image_states

    repository = f"dss-containers-test/server-{uuid.uuid4().hex[:8]}"
    assert server_image_states(docker_engine, repository) == []  # none built: nothing listed
    old = docker_engine.containers.create(default_base_image, ["true"])
    try:
        old_id = old.commit(repository, "0ld0ld0ld0ld").id
    finally:
        old.remove(force=True)
    docker_engine.api.tag(default_base_image, repository, "c0ffeec0ffee")
    docker_engine.api.tag(default_base_image, repository, "latest")
    try:
        states = {s.ref: s.state for s in server_image_states(docker_engine, repository)}
        assert states == {
            f"{repository}:c0ffeec0ffee": "built",
            f"{repository}:0ld0ld0ld0ld": "stale",
        }
        removed, kept = prune_states(server_image_states(docker_engine, repository), docker_engine)
        assert [s.ref for s in removed] == [f"{repository}:0ld0ld0ld0ld"] and not kept
        assert not image_exists(docker_engine, f"{repository}:0ld0ld0ld0ld")
        assert image_exists(docker_engine, f"{repository}:latest")
    finally:
        for label in ("latest", "c0ffeec0ffee", "0ld0ld0ld0ld"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(f"{repository}:{label}")
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            docker_engine.images.remove(old_id)
