"""The pure parts of a multi-user server: user roots and input bounds (no server needed)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import need
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_dss_containers.config import ConfigError, parse_config
from jupyter_dss_containers.server.limits import BadInput, parse_json, too_deep, whole_number
from jupyter_dss_containers.workspace import (
    DEFAULT_USER_ROOT,
    folder_name,
    is_inside,
    template_problem,
    user_root,
)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_two_user_names_never_share_a_folder(a, b):
    """Guards against a lossy escape (case folding, dropping characters, truncation) that
    would give two users one folder, or a name that climbs out (``..``, ``/``, NUL)."""
    fa, fb = folder_name(a), folder_name(b)
    assert (fa == fb) == (a == b)
    assert "/" not in fa and "\0" not in fa and not fa.startswith(".") and 0 < len(fa) <= 96


def test_a_user_root_is_one_folder_under_the_template():
    assert folder_name("alice") == "alice"
    assert folder_name("Alice") == "-41lice"
    assert folder_name("../bob") == "-2e-2e-2fbob"
    assert user_root("alice", "/srv/nb", DEFAULT_USER_ROOT).as_posix() == "/srv/nb/alice"
    assert user_root("../bob", "/srv/nb", DEFAULT_USER_ROOT).parent.as_posix() == "/srv/nb"
    assert user_root("bob", "/x", "/home/${user}/work").as_posix() == "/home/bob/work"
    with pytest.raises(ValueError, match=r"\$\{user\}"):
        user_root("bob", "/x", "/shared")


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("/shared", "${user}"),
        ("home/${user}", "absolute"),
        ("${root_dir}/../${user}", "'..'"),
        ("/srv/${USER}/${user}", "only the placeholders"),
    ],
)
def test_a_bad_user_root_template_is_refused_with_its_place(template, why):
    assert why in template_problem(template)
    with pytest.raises(ConfigError) as refused:
        parse_config({"defaults": {"user_root": template}}, "site.yaml")
    assert str(refused.value).startswith("site.yaml: defaults.user_root: ")


def test_host_kernels_and_terminals_are_closed_unless_the_file_opens_them():
    closed = parse_config({}, "t")
    assert closed.host_kernels.groups == closed.host_kernels.users == ()
    opened = parse_config(
        {"host_kernels": {"groups": ["admins"]}, "terminals": {"users": ["bob"]}}, "t"
    )
    assert opened.host_kernels.groups == ("admins",) and opened.terminals.users == ("bob",)
    with pytest.raises(ConfigError, match=r"terminals\.groups"):
        parse_config({"terminals": {"groups": "admins"}}, "t")


def test_a_symlink_out_of_a_root_is_outside_it(tmp_path):
    root, other = tmp_path / "eve", tmp_path / "bob"
    root.mkdir()
    other.mkdir()
    (root / "out").symlink_to(other)
    (root / "in").symlink_to(root)
    assert is_inside(root / "in" / "x", root) and is_inside(root, root)
    assert not is_inside(root / "out" / "x", root)
    assert not is_inside(tmp_path / "eve-2", root)  # a sibling with the same prefix


@pytest.mark.parametrize(
    "raw",
    [b"[" * 200000, b"{" * 100 + b"}" * 100, b'{"a": ' + b"1" * 5000 + b"}", b"NaN", b"\xff"],
)
def test_malformed_bodies_are_bad_input_before_parsing(raw):
    with pytest.raises(BadInput) as refused:
        parse_json(raw)
    assert refused.value.status == 400


def test_the_depth_check_skips_brackets_in_strings():
    body = json.dumps({"code": "[" * 1000, "x": [[1]]}).encode()
    assert not too_deep(body) and parse_json(body)["x"] == [[1]]
    assert too_deep(b'["\\"", ' + b"[" * 65 + b"]" * 65 + b"]")


def test_an_oversized_body_is_413():
    with pytest.raises(BadInput) as refused:
        parse_json(b" " * (1024**2 + 1))
    assert refused.value.status == 413


@pytest.mark.parametrize("text", ["²", "٣", "-1", "1e3", " 1", "1" * 31, ""])
def test_only_ascii_whole_numbers_are_whole_numbers(text):
    with pytest.raises(BadInput, match="'tail' must be a whole number"):
        whole_number(text, "tail", 1, 5000)
    assert whole_number("5000", "tail", 1, 5000) == 5000


# --------------------------------------------------------------------------- workload plans


def _plan(tmp_path, **settings):
    from jupyter_dss_containers.workspace import WorkspaceSettings, resolve_plan

    return lambda cwd, backend="docker", remote=False, root=None: resolve_plan(
        WorkspaceSettings.from_dict(settings),
        backend=backend,
        remote=remote,
        server_root=str(root or tmp_path),
        cwd=str(cwd),
        user="alice",
        config_name="c",
    )


def test_a_local_daemon_mounts_the_root_at_its_own_path_and_starts_in_the_folder(tmp_path):
    """Guards: mounting only the folder, another target path, or the server's cwd."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    _give_to(tmp_path, 1000, 100)  # a root server's user folder, as the README says to
    plan = _plan(tmp_path)(tmp_path / "a" / "b")
    root = str(tmp_path.resolve())
    assert (plan.root, plan.source, plan.working_dir) == (root, root, f"{root}/a/b")
    assert plan.notice is None and not plan.read_only


def _give_to(folder, uid: int, gid: int) -> None:
    """chown -R under a root server (the tests' own user otherwise owns it already)."""
    if os.geteuid() != 0:
        return
    for top, dirs, files in os.walk(folder):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.chown(name, uid, gid)


def test_a_root_servers_kernel_that_may_not_write_the_folder_is_told_so(tmp_path):
    """Guards: a root server's kernel (uid 1000, never root) in a root-owned folder failing
    its first write with a bare 'Permission denied' (the quickstart run as root)."""
    from jupyter_dss_containers.workspace import may_write, unwritable_told

    if os.geteuid() != 0:
        need("a server running as root (CI runs as root)")
    (tmp_path / "nb").mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    plan = unwritable_told(_plan(tmp_path)(tmp_path / "nb"))
    assert plan.user == "1000:100"
    assert "runs as 1000:100" in plan.notice and "may not write in" in plan.notice
    assert f"chown -R 1000:100 {tmp_path.resolve()}" in plan.notice
    os.chmod(tmp_path / "nb", 0o777)  # others may write: nothing to say
    assert unwritable_told(_plan(tmp_path)(tmp_path / "nb")).notice is None
    read_only = _plan(tmp_path, read_only=True)(tmp_path)
    assert unwritable_told(read_only).notice is None  # read-only: nothing new to say
    os.chmod(tmp_path / "nb", 0o755)
    remote = _plan(tmp_path, host_path="/srv/${user}")(tmp_path / "nb", remote=True)
    assert unwritable_told(remote).notice is None  # not the server's folder: not judged here
    assert _plan(tmp_path)(tmp_path / "nb").notice is None  # jobs: resolve_plan says nothing
    info = os.stat(tmp_path)
    assert may_write(info.st_uid, 0, info) and not may_write(4242, 4242, info)


def test_a_folder_outside_the_root_or_through_a_link_out_is_refused(tmp_path):
    """Guards: ``..`` or a planted symlink reaching past the root at mount time."""
    import pytest

    from jupyter_dss_containers.workspace import WorkspaceError

    root = tmp_path / "alice"
    (root / "work").mkdir(parents=True)
    (tmp_path / "bob").mkdir()
    (root / "escape").symlink_to(tmp_path / "bob")
    plan = _plan(tmp_path, read_only=True)
    for cwd in (root / ".." / "bob", root / "escape", tmp_path / "bob"):
        with pytest.raises(WorkspaceError, match="outside the workspace"):
            plan(cwd, root=root)
    assert plan(root / "work", root=root).read_only


def test_remote_daemons_mount_host_path_or_say_why_nothing_is_there(tmp_path):
    """Guards: a remote daemon bind-mounting the server's path (not its own tree), or
    starting with an empty folder and no word about it."""
    shared = _plan(tmp_path, host_path="/srv/home/${user}")(tmp_path, remote=True)
    assert shared.source == "/srv/home/alice" and shared.root == str(tmp_path.resolve())
    alone = _plan(tmp_path)(tmp_path, remote=True)
    assert not alone.mounted and "workspace.host_path" in alone.notice
    pod = _plan(tmp_path, volume="home-${user}", sub_path="nb")(tmp_path, backend="kubernetes")
    assert pod.volume == {"claim": "home-alice"} and pod.sub_path == "nb"
    assert "workspace.volume" in _plan(tmp_path)(tmp_path, backend="kubernetes").notice
    assert not _plan(tmp_path, mount="none")(tmp_path).mounted


def test_the_workload_runs_as_the_server_user_or_the_workspace_owner_never_root():
    """Guards: a root server running workloads as root on the user's files."""
    from jupyter_dss_containers.workspace import IMAGE_UID_GID, workload_user

    assert workload_user(1001, 1001, (1234, 100)) == "1001:1001"
    assert workload_user(0, 0, (1234, 100)) == "1234:100"
    assert workload_user(0, 0, (0, 0)) == "{}:{}".format(*IMAGE_UID_GID)


def test_a_root_that_would_hide_the_images_folders_is_not_mounted(tmp_path):
    """Guards: a server started in / or /tmp mounting the host's tree over the container's
    system, venv or private job folder."""
    from jupyter_dss_containers.workspace import hides_the_image

    assert all(hides_the_image(p) for p in ("/", "/tmp", "/opt", "/usr", "/etc", "/opt/dss"))
    assert not any(hides_the_image(p) for p in ("/tmp/x", "/home/alice", "/opt/data"))
    plan = _plan(tmp_path)(tmp_path, root="/")
    assert plan.mounted and plan.root == str(tmp_path.resolve())  # the folder alone


def test_no_workspace_is_mounted_over_a_private_folder_of_the_workload():
    """Guards: a workspace mounted at (or above) the kernel's writable copy of its connection
    file or an R job's output folder, hiding them (they were missing from the list)."""
    from jupyter_dss_containers import launcher
    from jupyter_dss_containers.jobs import rlang
    from jupyter_dss_containers.workspace import hides_the_image

    private = ("/tmp/.dss-kernel", "/tmp/.dss-kernel-rw", "/tmp/.dss-job", "/tmp/.dss-job-out")
    assert all(hides_the_image(p) for p in private)
    assert all(hides_the_image(p + "/") for p in private)
    # the folders the workloads really use are the protected ones
    assert hides_the_image(launcher.WRITABLE_CONNECTION_FILE.rsplit("/", 1)[0])
    assert hides_the_image(rlang.WRITABLE_DIR)
    assert not hides_the_image("/tmp/.dss-jobs")  # a sibling with a longer name is not one


def test_a_configs_plan_follows_its_daemon(tmp_path):
    """Guards ``config_plan`` (the one call kernels and jobs make) passing a remote daemon
    as local: a tcp:// daemon's workload would get a bind mount of a folder it cannot see."""
    from jupyter_dss_containers.workspace import config_plan

    def plan(docker):
        config = parse_config(
            {
                "execution_configs": {
                    "c": {"backend": "docker", "image": "default", "docker": docker}
                }
            },
            "t.yaml",
        ).get("c")
        return config, config_plan(config, server_root=str(tmp_path), cwd=str(tmp_path), user="a")

    config, local = plan({})
    assert not config.on_remote_daemon and local.mounted
    assert local.root == str(tmp_path.resolve())
    config, remote = plan({"host": "tcp://10.0.0.1:2376"})
    assert config.on_remote_daemon and not remote.mounted and remote.notice
    config, pipe = plan({"host": "npipe:////./pipe/docker_engine"})
    assert not config.on_remote_daemon and pipe.mounted  # a named pipe is of this host
