"""A server running as root gives what it saves in a user's folder to that folder's owner.

A root server's notebook kernel runs as the workspace's owner, never as root; a folder or
notebook made in JupyterLab would otherwise be root's and the kernel could not write beside
its notebook (the quickstart run as root). One real ``jupyter server`` subprocess (as root,
as CI runs), its contents API, and the files' owners on disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import need
from servers import ServerProcess

from jupyter_dss_containers.server.owners import owner_to_inherit


@pytest.fixture
def root_server(tmp_path):
    if os.geteuid() != 0:
        need("a server running as root (CI runs as root)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSS_CONTAINERS_")}
    for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[var] = str(tmp_path / var)
    no_reaper = ("--DSSContainersExtension.reap_on_start=False",)
    proc = ServerProcess(tmp_path, env, extra_args=no_reaper)
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_what_a_root_server_saves_in_a_users_folder_is_that_users(root_server):
    """Guards: a new folder, notebook or file saved by a root server left root's inside a
    folder given to 1000:100 (the kernel, running as 1000:100, then gets Permission denied);
    and a root-owned folder's items given away."""
    root = Path(root_server.root_dir)
    (root / "mine").mkdir()
    os.chown(root / "mine", 1000, 100)
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    calls = [
        ("mine/demo", {"type": "directory"}),
        ("mine/demo/analysis.ipynb", {"type": "notebook", "content": notebook}),
        ("mine/demo/data.csv", {"type": "file", "format": "text", "content": "x\n1\n"}),
        ("theirs", {"type": "directory"}),  # in the root-owned root: stays root's
    ]
    for path, model in calls:
        status, reply = root_server.request("PUT", f"api/contents/{path}", model)
        assert status in (200, 201), reply
    owners = {p: (os.stat(root / p).st_uid, os.stat(root / p).st_gid) for p, _ in calls}
    assert owners == {
        "mine/demo": (1000, 100),
        "mine/demo/analysis.ipynb": (1000, 100),
        "mine/demo/data.csv": (1000, 100),
        "theirs": (0, 0),
    }
    # a save (atomic: a new file replaces the old) keeps the owner
    again = {"type": "file", "format": "text", "content": "x\n2\n"}
    status, _ = root_server.request("PUT", "api/contents/mine/demo/data.csv", again)
    assert status == 200 and os.stat(root / "mine/demo/data.csv").st_uid == 1000


def test_only_a_root_server_gives_ownership_away():
    """Guards: a non-root server chowning (it could not), or root's own folders given away."""
    users = os.stat_result((0o40755, 0, 0, 0, 1000, 100, 0, 0, 0, 0))
    roots = os.stat_result((0o40755, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert owner_to_inherit(users, server_uid=0) == (1000, 100)
    assert owner_to_inherit(roots, server_uid=0) is None
    assert owner_to_inherit(users, server_uid=1000) is None
