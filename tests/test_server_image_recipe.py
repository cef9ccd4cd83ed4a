"""The server image's pure recipe (no engine): its content tag, Dockerfile, entry point and
``docker run`` line. The image built and run for real is ``test_server_container.py``."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import zipfile
from pathlib import Path

from jupyter_dss_containers.images.registry import split_ref
from jupyter_dss_containers.images.server_image import wheel_digest
from jupyter_dss_containers.images.server_recipe import (
    ENTRYPOINT,
    SECRET_FILE_ENV,
    SECRET_MOUNT,
    SERVER_PINS,
    ServerRecipe,
    docker_run_command,
    server_requirements,
    wheel_requirements,
)

METADATA = """Metadata-Version: 2.5
Name: jupyter-dss-containers
Requires-Dist: docker>=7.0
Requires-Dist: tomli; python_version < "3.11"
Provides-Extra: test
Requires-Dist: pytest>=8; extra == 'test'
Requires-Dist: jupyterhub>=5; extra=="launcher"
"""

RECIPE = ServerRecipe(
    base_ref="dss-containers/base-default:0123456789ab",
    requirements=("docker>=7.0", "jupyterlab==4.6.6"),
    dependency_wheels=("docker-7.1.0-py3-none-any.whl", "jupyterlab-4.6.6-py3-none-any.whl"),
    package_wheel="jupyter_dss_containers-0.1.0-py3-none-any.whl",
    package_digest="d" * 64,
)


def test_only_the_packages_own_dependencies_and_the_pins_are_installed():
    """Guards extras (test, launcher) leaking into the server image."""
    assert wheel_requirements(METADATA) == ["docker>=7.0", 'tomli; python_version < "3.11"']
    pins = [f"{n}=={v}" for n, v in SERVER_PINS.items()]
    assert list(server_requirements(METADATA)) == [*wheel_requirements(METADATA), *pins]


def test_the_tag_follows_every_input_and_nothing_else():
    """Guards a stale image kept for a changed package, wheel set or base (the tag must
    move), and a rebuild for nothing (the same inputs give the same tag)."""
    assert RECIPE.tag == dataclasses.replace(RECIPE).tag
    assert RECIPE.tag.startswith("dss-containers/server:") and len(RECIPE.tag.split(":")[1]) == 12
    for change in (
        {"package_digest": "e" * 64},
        {"base_ref": "dss-containers/base-default:ba9876543210"},
        {"dependency_wheels": ("docker-7.2.0-py3-none-any.whl",)},
        {"requirements": ("docker>=7.0",)},
    ):
        assert dataclasses.replace(RECIPE, **change).tag != RECIPE.tag, change
    # the labels name the hash, so they stay out of what is hashed
    assert RECIPE.labels()["dss-containers.jupyter.org/content-hash"] == RECIPE.content_hash()


def test_the_dockerfile_installs_from_the_context_only_and_runs_unprivileged():
    """Guards an install that would reach an index (the build has no network) and an image
    that would run the server as root."""
    lines = RECIPE.dockerfile().splitlines()
    installs = [line for line in lines if "pip install" in line]
    assert len(installs) == 2 and all("--no-index" in line for line in installs)
    assert "--no-deps" in installs[1] and "pip check" in installs[1]
    assert lines[0] == f"FROM {RECIPE.base_ref}"
    assert "USER 1000:100" in lines[-3:]
    assert lines[-2].startswith('ENTRYPOINT ["tini", "--"')
    assert "docker.sock" not in RECIPE.dockerfile()


def test_the_run_line_shares_loopback_and_the_workspace_path_and_holds_no_socket():
    """Guards the deployment's shape: host network (launcher and kernel ports on loopback),
    the notebooks at the same absolute path, the secret as a file, not a value, CurveZMQ
    required, no daemon socket, no capability."""
    argv = docker_run_command(
        "img:1",
        notebooks="/srv/notebooks/alice",
        launcher_url="http://127.0.0.1:8790/",
        secret_file="/home/alice/.dss-launcher.secret",
        user="alice",
        uid_gid="1001:1001",
    )
    line = " ".join(argv)
    assert "--network host" in line and "--cap-drop ALL" in line
    assert "--name jupyter --hostname jupyter" in line  # its own host label for the reaper
    assert "-v /srv/notebooks/alice:/srv/notebooks/alice" in line
    assert "--ServerApp.root_dir=/srv/notebooks/alice" in line
    assert "--ServerApp.ip=127.0.0.1" in line
    assert "--KernelManager.transport_encryption=required" in line
    assert f"-v /home/alice/.dss-launcher.secret:{SECRET_MOUNT}:ro" in line
    assert "docker.sock" not in line and "DOCKER_HOST" not in line
    assert argv[argv.index("img:1") - 1].startswith("/srv/notebooks")  # options before image


def test_the_entry_point_reads_the_secret_file_and_finds_a_writable_home(tmp_path):
    """Guards the secret staying out of ``docker inspect`` (read from the file at start) and
    a server run as a uid the image does not know (no writable HOME otherwise)."""
    script = tmp_path / "entrypoint.sh"
    script.write_text(ENTRYPOINT)
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value-of-the-launcher\n")
    env = {"PATH": os.environ["PATH"], SECRET_FILE_ENV: str(secret), "HOME": "/nonexistent"}
    out = subprocess.run(
        ["sh", str(script), "sh", "-c", 'echo "$DSS_CONTAINERS_LAUNCHER_SECRET|$HOME|$USER"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    value, home, user = out.split("|")
    assert value == "s3cr3t-value-of-the-launcher"
    assert home == f"/tmp/home-{os.getuid()}" and os.access(home, os.W_OK)
    assert user  # a name for getpass.getuser(), which the launcher maps to an OS user


def test_the_wheel_digest_ignores_zip_times_but_not_contents(tmp_path):
    """Guards a rebuild of an unchanged package (zip times differ between builds) and a
    changed one kept (its digest must move)."""

    def wheel(name: str, data: bytes, when: tuple) -> str:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(zipfile.ZipInfo("pkg/__init__.py", when), data)
        return path

    first = wheel_digest(wheel("a.whl", b"x = 1\n", (2020, 1, 1, 0, 0, 0)))
    assert first == wheel_digest(wheel("b.whl", b"x = 1\n", (2024, 6, 1, 12, 0, 0)))
    assert first != wheel_digest(wheel("c.whl", b"x = 2\n", (2020, 1, 1, 0, 0, 0)))


def test_extra_names_split_into_repository_and_tag():
    """Guards the server image's extra names tagged under a wrong repository (a registry's
    port taken for a tag); the one splitter registry pushes use too."""
    assert split_ref("myorg/jupyter:1.2") == ("myorg/jupyter", "1.2")
    assert split_ref("myorg/jupyter") == ("myorg/jupyter", "latest")
    assert split_ref("registry:5000/team/jupyter") == ("registry:5000/team/jupyter", "latest")
    assert split_ref("registry:5000/team/jupyter:v2") == ("registry:5000/team/jupyter", "v2")


def test_the_readmes_docker_run_line_is_the_one_the_test_runs():
    """Guards the documentation drifting from the line ``test_server_container.py`` runs."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## The Jupyter server in a container", 1)[1]
    block = section.split("$ docker run", 1)[1].split("```", 1)[0]
    documented = shlex.split("docker run" + block.replace("\\\n", " "))
    expected = docker_run_command(
        "dss-containers/server:latest",
        notebooks="/srv/notebooks/alice",
        launcher_url="http://127.0.0.1:8790/",
        secret_file="/srv/dss/alice.secret",
        user="alice",
        uid_gid="$(id -u alice):$(id -g alice)",
    )
    assert documented == expected
