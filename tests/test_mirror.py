"""Code envs that mirror a Python environment (``mirror: true`` or ``mirror: PATH``).

The pins are read for real (a requirements file; the installed distributions'
metadata through importlib.metadata), the wheels are chosen by the host's real pip (from an
offline wheelhouse of wheels made here, or, for the one image built, the same ``pip
download`` and cache as every code env), and the image is built on the real engine and run
as a kernel through plain jupyter_client.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import kernels
import pytest
import yaml
from conftest import need
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from test_fuzz import FUZZ, maybe, nasty_text

from jupyter_dss_containers import images
from jupyter_dss_containers.config import DATA_SCIENCE_PACKAGES, ConfigError, parse_config
from jupyter_dss_containers.images import mirror
from jupyter_dss_containers.images.mirrorwheels import mirror_wheels
from jupyter_dss_containers.kernelspecs import ContainerKernelSpecManager

#: versions other than the default image's (numpy 2.4, pandas 3.1), with cp311 wheels
MIRRORED = {"numpy": "2.3.5", "pandas": "2.3.3"}
REQUIREMENTS = f"""\
# the pip freeze of a project, trimmed
numpy=={MIRRORED["numpy"]}
pandas=={MIRRORED["pandas"]}   # the pickles of its frames cross --in/--out
-e ./vendor/mylib
jupyter_server==2.21.1
"""
CLI = [sys.executable, "-c", "from jupyter_dss_containers.cli import main; main()"]


def config_data(mirror_path: str, **env: object) -> dict:
    return {
        "code_envs": {
            "mine": {"mirror": mirror_path, "available_for": ["small"], **env},
            "plain": {"packages": ["six==1.17.0"], "available_for": ["small"]},
        },
        "execution_configs": {
            "small": {"backend": "docker", "image": "default", "permissions": {"groups": ["*"]}}
        },
    }


def write(folder: Path, requirements: str, **env: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(requirements)
    path = folder / "envs.yaml"
    path.write_text(yaml.safe_dump(config_data("requirements.txt", **env)))
    return path


def make_wheel(
    folder: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    requires=(),
    python: str | None = None,
) -> None:
    """A real (tiny) wheel: pip reads its metadata like any other."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + (f"Requires-Python: {python}\n" if python else "")
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        f"Tag: {tag}\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-{tag}.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def make_dist(folder: Path, name: str, requires=(), direct_url: dict | None = None) -> None:
    """An installed distribution's ``.dist-info``, as pip leaves it."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"]
    lines += [f"Requires-Dist: {r}\n" for r in requires]
    (info / "METADATA").write_text("".join(lines))
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


# --------------------------------------------------------------------------- reading pins


def test_a_requirements_file_mirrors_exact_pins_and_names_what_it_leaves_out():
    """Guards: a range, a URL, an editable or local install, a pip option or one of the
    server's own packages slipping into the pins (or a pin silently dropped)."""
    text = """\
# comment
NumPy==2.3.5
pandas[performance]==2.3.3 ; python_version >= "3.10"   # a marker is kept
six==1.16.0 \\
    --hash=sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926
-e ./vendor/mylib
./wheels/local-1.0-py3-none-any.whl
requests>=2
jupyter_server==2.21.1
pip==24.0
foo @ file:///tmp/foo-1.0.tar.gz
bar @ https://example.invalid/bar-1.0.whl
git+https://example.invalid/repo.git
--index-url https://example.invalid/simple
numpy==2.3.4
"""
    plan = mirror.parse_requirements(text, "r.txt")
    assert plan.pins == (
        "numpy==2.3.5",
        'pandas[performance]==2.3.3; python_version >= "3.10"',
        "six==1.16.0",
    )
    reasons = {u.requirement: u.reason for u in plan.skipped}
    assert reasons == {
        "-e ./vendor/mylib": "editable",
        "./wheels/local-1.0-py3-none-any.whl": "local",
        "requests>=2": "unpinned",
        "jupyter_server==2.21.1": "excluded",
        "pip==24.0": "excluded",
        "foo @ file:///tmp/foo-1.0.tar.gz": "local",
        "bar @ https://example.invalid/bar-1.0.whl": "url",
        "git+https://example.invalid/repo.git": "url",
        "--index-url https://example.invalid/simple": "option",
        "numpy==2.3.4": "duplicate",
    }
    assert set(mirror.SERVER_ONLY) >= {"jupyter-dss-containers", "jupyter-server", "jupyterlab"}


def test_the_servers_environment_is_read_from_its_installed_distributions(tmp_path):
    """Guards: the server's environment mirrored with an editable install, a server
    extension (directly or through another package) or this package itself in it; an
    optional extra counted as a hard requirement; a real pin of the host missing."""
    make_dist(
        tmp_path,
        "dss-mirror-edit",
        direct_url={"url": "file:///src", "dir_info": {"editable": True}},
    )
    make_dist(tmp_path, "dss-mirror-folder", direct_url={"url": "file:///src", "dir_info": {}})
    make_dist(
        tmp_path, "dss-mirror-vcs", direct_url={"url": "https://x/y", "vcs_info": {"vcs": "git"}}
    )
    make_dist(tmp_path, "dss-mirror-ext", requires=["jupyter_server>=2"])
    make_dist(tmp_path, "dss-mirror-ext-user", requires=["dss-mirror-ext"])
    make_dist(tmp_path, "dss-mirror-opt", requires=['jupyter_server; extra == "server"'])
    plan = mirror.server_plan(mirror.excluded_names(["PyYAML"]), [str(tmp_path), *sys.path])
    assert f"numpy=={importlib.metadata.version('numpy')}" in plan.pins
    assert "dss-mirror-opt==1.0" in plan.pins
    skipped = {u.name: u for u in plan.skipped}
    assert skipped["dss-mirror-edit"].reason == "editable"
    assert skipped["dss-mirror-folder"].reason == "local"
    assert skipped["dss-mirror-vcs"].reason == "url"
    assert (
        skipped["dss-mirror-ext"].detail == "needs jupyter-server, one of the server's own packages"
    )
    assert skipped["dss-mirror-ext-user"].detail.startswith("needs jupyter-server")
    assert skipped["jupyter-dss-containers"].reason == "excluded"
    assert skipped["pyyaml"].detail == "named in the env's exclude list"
    names = {p.split("==")[0] for p in plan.pins}
    assert not names & (mirror.SERVER_ONLY | {"pyyaml", "pip"})


@FUZZ
@given(text=st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("=@;#\\-\n ./[]")))
def test_any_requirements_text_gives_exact_pins_or_reasons(text):
    """Guards: a traceback on a strange file, or a pin that is not ``name==version``."""
    plan = mirror.parse_requirements(text, "r.txt")
    for pin in plan.pins:
        [specifier] = Requirement(pin).specifier
        assert specifier.operator in ("==", "===")
    assert all(u.reason and u.detail for u in plan.skipped)


@FUZZ
@given(value=maybe(nasty_text | st.booleans()), exclude=maybe(st.lists(nasty_text, max_size=2)))
def test_any_mirror_setting_loads_or_says_where(tmp_path_factory, value, exclude):
    """Guards: a mirror or exclude value that passes the schema and then breaks the kernel
    start path with something other than a CodeEnvError naming the env."""
    env = {"mirror": value, "exclude": exclude, "available_for": "all"}
    data = {
        "code_envs": {"mine": env},
        **{k: v for k, v in config_data("r").items() if k != "code_envs"},
    }
    source = str(tmp_path_factory.getbasetemp() / "fuzz.yaml")
    try:
        config_file = parse_config(data, source)
    except ConfigError as exc:
        assert all(line.startswith(f"{source}: ") for line in str(exc).split("\n"))
        return
    try:
        images.resolve_image(config_file, config_file.get("small"), "mine")
    except images.CodeEnvError as exc:
        assert str(exc).startswith("code_envs.mine.mirror: ")


def test_the_content_tag_follows_the_pins_only(tmp_path):
    """Guards: a comment or an unmirrorable line rebuilding the env (no no-op rebuild), a
    changed pin not rebuilding it, or the env's own packages losing to a mirrored pin."""

    folders = iter(range(100))

    def tag(requirements: str, **env: object) -> str:
        path = write(tmp_path / f"v{next(folders)}", requirements, **env)
        config_file = parse_config(yaml.safe_load(path.read_text()), str(path))
        return images.resolve_image(config_file, config_file.get("small"), "mine")

    first = tag(REQUIREMENTS)
    assert tag("# reordered, commented\n" + "\n".join(reversed(REQUIREMENTS.splitlines()))) == first
    assert tag(REQUIREMENTS + "./another/local/folder\nrequests>=2\n") == first
    assert tag(REQUIREMENTS.replace("numpy==2.3.5", "numpy==2.3.4")) != first
    assert tag(REQUIREMENTS, packages=["numpy==2.3.4"]) != first

    path = write(tmp_path / "own", REQUIREMENTS, packages=["numpy==2.3.4"])
    config_file = parse_config(yaml.safe_load(path.read_text()), str(path))
    recipe = images.env_recipe(config_file, "mine", "small")
    assert recipe.mirror == ("pandas==2.3.3",) and recipe.packages == ("numpy==2.3.4",)
    [overridden] = [u for u in recipe.not_mirrored if u.reason == "overridden"]
    assert overridden.requirement == "numpy==2.3.5"
    with pytest.raises(ConfigError, match=r"code_envs\.plain\.exclude: expected only with mirror"):
        data = config_data("requirements.txt")
        data["code_envs"]["plain"]["exclude"] = ["numpy"]
        parse_config(data, str(path))
    missing = parse_config(config_data("nowhere.txt"), str(path))
    with pytest.raises(
        images.CodeEnvError, match=r"code_envs\.mine\.mirror: cannot read .*nowhere"
    ):
        images.resolve_image(missing, missing.get("small"), "mine")


def test_pins_without_a_wheel_for_the_image_are_left_out_one_at_a_time(tmp_path, monkeypatch):
    """The host's real pip, offline (``--no-index`` on a wheelhouse of wheels made here).
    Guards: one pin without a wheel failing the whole set, a cp312-only wheel taken for the
    cp311 image (or one needing Python 3.12), a missing dependency blamed on the wrong pin,
    a false marker downloaded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    make_wheel(wheelhouse, "dss_toy", "1.0")
    make_wheel(wheelhouse, "dss_toy_c", "1.0", "cp312-cp312-manylinux_2_17_x86_64")
    make_wheel(wheelhouse, "dss_toy_dep", "1.0", requires=["dss-toy-missing==3"])
    make_wheel(wheelhouse, "dss_toy_new", "1.0", python=">=3.12")
    pins = [
        "dss-toy-new==1.0",
        "dss-toy==1.0",
        "dss-toy-c==1.0",
        "dss-toy-dep==1.0",
        "dss-toy-absent==2.0",
        'dss-toy-old==1.0; python_version < "3.0"',
    ]
    run = images.BuildRun("toy", None)
    found = mirror_wheels(pins, "3.11", "2.36", run, wheelhouse=wheelhouse)
    assert found.pins == ("dss-toy==1.0",)
    assert [f.name for f in found.files] == ["dss_toy-1.0-py3-none-any.whl"]
    why = {u.name: (u.reason, u.detail) for u in found.failed}
    platform_words = "cp311 manylinux (glibc 2.36)"
    assert (
        why["dss-toy-c"][0] == "no-wheel"
        and f"no wheel for {platform_words}" in why["dss-toy-c"][1]
    )
    assert why["dss-toy-absent"][0] == "no-wheel"
    assert why["dss-toy-dep"][1].startswith(
        f"needs dss-toy-missing==3, which has no wheel for {platform_words}"
    )
    assert why["dss-toy-old"][0] == "marker"
    assert why["dss-toy-new"] == (
        "no-wheel",
        f"no wheel for {platform_words} x86_64: 1.0 needs Python >=3.12",
    )
    events: list[images.BuildEvent] = []
    again = images.BuildRun("toy", events.append)
    has_wheels = ["dss-toy==1.0", "dss-toy-dep==1.0"]  # the set pip finally downloaded
    second = mirror_wheels(has_wheels, "3.11", "2.36", again, wheelhouse=wheelhouse)
    assert second.pins == found.pins and second.files == found.files
    assert any(e.message.startswith("using cached wheels") for e in events)


# --------------------------------------------------------------------------- the image


@pytest.fixture(scope="module")
def mirrored(docker_client, workspace, base_image) -> tuple[Path, images.EnvBuild]:
    """The one image built here: numpy and pandas at versions other than the default
    image's, one ``pip download`` on a fresh machine (cached, like every code env's wheels)."""
    path = write(workspace / "mirror", REQUIREMENTS)
    config_file = parse_config(yaml.safe_load(path.read_text()), str(path))
    return path, images.build_env_image(config_file, "mine", "small", docker_client)


@pytest.mark.docker
def test_a_mirrored_env_builds_once_and_images_lists_what_it_left_out(mirrored, docker_client):
    """Guards: `images` not listing what was left out (and why), or listing it only right
    after the build; an unchanged environment rebuilding."""
    path, result = mirrored
    if result.built:
        assert {u.requirement for u in result.not_mirrored} == {
            "-e ./vendor/mylib",
            "jupyter_server==2.21.1",
        }
    config_file = parse_config(yaml.safe_load(path.read_text()), str(path))
    assert not images.build_env_image(config_file, "mine", "small", docker_client).built

    env = {**os.environ, "DSS_CONTAINERS_CONFIG": str(path)}
    listed = subprocess.run([*CLI, "images", "--json"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    [row] = [r for r in rows if r["name"] == "mine" and r["state"] == "built"]
    assert row["ref"] == result.tag
    assert row["mirror"]["wheels_checked"] and row["mirror"]["pins"] == 2
    assert row["mirror"]["source"] == str(path.parent / "requirements.txt")
    left_out = {u["requirement"]: u["reason"] for u in row["mirror"]["not_mirrored"]}
    assert left_out == {"-e ./vendor/mylib": "editable", "jupyter_server==2.21.1": "excluded"}
    assert all(r["mirror"] is None for r in rows if r["name"] != "mine")
    table = subprocess.run([*CLI, "images"], capture_output=True, text=True, env=env)
    assert table.returncode == 0, table.stderr
    assert "mine (small) mirrors" in table.stdout and "2 not mirrored" in table.stdout
    assert "-e ./vendor/mylib  [editable/local]" in table.stdout
    assert "jupyter_server==2.21.1  [excluded] one of the server's own packages" in table.stdout


@pytest.mark.docker
async def test_a_kernel_in_the_mirrored_env_runs_the_mirrored_versions(mirrored):
    """Guards: the pins not reaching the image, or the default image's versions winning."""
    path, _ = mirrored
    ksm = ContainerKernelSpecManager(dss_config_file=str(path))
    code = "import numpy, pandas; print('versions', numpy.__version__, pandas.__version__)"

    async def versions(kernel_name: str) -> str:
        km, kc = await kernels.start(kernel_name, kernel_spec_manager=ksm)
        try:  # generous: the first import of pandas on a loaded 2-core machine is slow
            _reply, out = await kernels.run(kc, code, timeout=300)
        finally:
            await kernels.stop(km, kc)
        return out

    out = await versions("dss-small-mine")
    assert f"versions {MIRRORED['numpy']} {MIRRORED['pandas']}" in out, out
    default = dict(p.split("==") for p in DATA_SCIENCE_PACKAGES)
    assert (default["numpy"], default["pandas"]) != (MIRRORED["numpy"], MIRRORED["pandas"])
    base = await versions("dss-small")
    assert f"versions {default['numpy']} {default['pandas']}" in base, base


#: run in a caller process whose pandas is the mirror's: a frame goes in, one made in the job
#: comes out (pandas 3 gives its strings a dtype pandas 2.3 cannot unpickle)
CALLER = """
import sys
import pandas as pd
from jupyter_dss_containers import jobs
df = pd.DataFrame({"s": ["a", "b"], "x": [1.0, 2.0]})
code = (
    "import pandas; seen = pandas.__version__; "
    "back = pandas.DataFrame({'name': list(df.s), 'y': df.x * 2})"
)
env = sys.argv[1] or None
try:
    out = jobs.run("small", code, inputs={"df": df}, outputs=["back", "seen"], env=env)
except Exception as exc:
    print("failed", type(exc).__name__, exc)
else:
    back = out["back"]
    print("caller", pd.__version__, "job", out["seen"], "back", list(back.name), list(back.y))
"""


@pytest.mark.docker
def test_frames_cross_in_and_out_without_version_skew(mirrored, tmp_path):
    """A caller with the mirror's pandas (a venv on the host holding the very wheels the
    image got, no index asked) sends a frame to a job in the mirrored env and loads the
    frame it makes; the same job in the default image returns one the caller cannot load.
    Guards: the env's pins differing from the source's (the frame then fails to load), and
    this test proving nothing (the skew it avoids not being there)."""
    if sys.version_info[:2] != (3, 11):
        need("the caller venv takes the mirror's cp311 wheels: the host's Python is not 3.11")
    path, _ = mirrored
    config_file = parse_config(yaml.safe_load(path.read_text()), str(path))
    recipe = images.env_recipe(config_file, "mine", "small")
    found = mirror_wheels(recipe.mirror, "3.11", "2.36", images.BuildRun("caller", None))
    assert found.pins == tuple(f"{n}=={v}" for n, v in sorted(MIRRORED.items()))
    venv = tmp_path / "caller"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], check=True
    )
    python = str(venv / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index"]
    subprocess.run([*install, "--no-deps", "--no-compile", *map(str, found.files)], check=True)
    env = {**os.environ, "DSS_CONTAINERS_CONFIG": str(path)}

    def call(code_env: str) -> str:
        done = subprocess.run(
            [python, "-c", CALLER, code_env], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    versions = f"caller {MIRRORED['pandas']} job {MIRRORED['pandas']}"
    assert call("mine") == f"{versions} back ['a', 'b'] [2.0, 4.0]"
    # (the same job in the default image, pandas 3, may or may not load in this caller:
    # whether it does depends on what both sides have installed, so it proves nothing)
