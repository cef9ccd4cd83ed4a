"""Two users on one server, each with a workspace of their own in their container kernels.

A real jupyter_server subprocess (run as root, as in CI) with the ``X-Test-User`` identity
provider; alice and bob each have their own root (``${root_dir}/${user}``), both owned by
one non-root uid, so that only the mount (not the host's file modes) keeps bob's files out
of alice's container. alice's kernel on the ``local`` config is started through
``POST /api/sessions`` with a notebook path in her folder, and then probes, from inside the
container, every way to bob's files and out of her root.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import ServerProcess, ws_execute
from test_multiuser import call, containers_of, multiuser_server, ws_request

pytestmark = pytest.mark.docker

CONFIG = """
groups: {alice: [analysts], bob: [analysts]}
execution_configs:
  local: {backend: docker, image: default, permissions: {groups: [analysts]}}
"""
#: the owner of both users' folders: neither root, nor the image's 1000:100 fallback
OWNER = (1234, 100)
BOBS_SECRET = "bob's secret, not for alice"
ALICES_DATA = "alice's data"


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image) -> Iterator[ServerProcess]:
    with multiuser_server(tmp_path_factory.mktemp("workspace-users"), CONFIG) as proc:
        yield proc


@pytest.fixture(scope="module")
def roots(server, tmp_path_factory) -> dict[str, Path]:
    """alice's and bob's roots with their files, chowned (and the server's root) to
    :data:`OWNER`; links planted in alice's folder (as her own kernel could plant them) to
    bob's root, to ``/etc`` and to a host folder outside every root."""
    outside = tmp_path_factory.mktemp("outside-every-root")
    (outside / "host-only.txt").write_text("the host's, not the container's")
    for user, name, text in (("alice", "work/data.txt", ALICES_DATA), ("bob", "secret.txt", "")):
        if user == "alice":
            assert call(server, user, "PUT", "api/contents/work", {"type": "directory"})[0] == 201
        body = {"type": "file", "format": "text", "content": text or BOBS_SECRET}
        assert call(server, user, "PUT", f"api/contents/{name}", body)[0] == 201
    alice, bob = server.root_dir / "alice", server.root_dir / "bob"
    (alice / "to-bob").symlink_to(bob)
    (alice / "work" / "to-etc").symlink_to("/etc")
    (alice / "work" / "to-outside").symlink_to(outside)
    (alice / "escape").symlink_to(bob)
    os.lchown(server.root_dir, *OWNER)  # the server's root too: only the mount keeps bob out
    for root in (alice, bob):
        for folder, dirs, files in os.walk(root):
            for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                os.lchown(name, *OWNER)
    return {"alice": alice.resolve(), "bob": bob.resolve(), "outside": outside.resolve()}


async def execute(server: ServerProcess, user: str, kernel_id: str, code: str) -> str:
    """Run ``code`` on the kernel's websocket as ``user``; return what it printed (stdout;
    a traceback fails the test)."""
    path = f"api/kernels/{kernel_id}/channels?session_id={uuid.uuid4()}"
    return await ws_execute(ws_request(server, user, path), user, code, strict=True)


PROBE = """
import json, os
def look(path):
    try:
        if os.path.isdir(path):
            return ["listed", sorted(os.listdir(path))]
        with open(path) as f:
            return ["read", f.read()]
    except OSError as exc:
        return ["refused", type(exc).__name__]
def write(path):
    try:
        with open(path, "w") as f:
            f.write("alice was here")
        return "written"
    except OSError as exc:
        return type(exc).__name__
reads, writes = json.loads(%r)
try:
    with open("out.txt", "w") as f:
        f.write("written by alice's kernel")
    own = "written"
except OSError as exc:
    own = type(exc).__name__
print(json.dumps({"own_write": own,
    "cwd": os.getcwd(), "uid": "%%d:%%d" %% (os.getuid(), os.getgid()),
    "home": os.environ.get("HOME"), "home_writable": os.access(os.environ["HOME"], os.W_OK),
    "reads": {p: look(p) for p in reads}, "writes": {p: write(p) for p in writes},
}))
"""


def test_alices_kernel_sees_her_folder_and_nothing_of_bobs_by_any_path(
    server, roots, docker_client
):
    """Guards the per-user workspace mount: alice's kernel starts in her notebook's folder
    at its host path and sees her files, while bob's root (same owner uid, so no file mode
    stops it) is unreachable by its absolute path, by ``..`` from hers and by links planted
    in her folder; links to ``/etc`` or a host folder outside every root lead to the
    container's own files or nowhere. Catches mounting the server's root (or the parent of
    the user's) instead of the user's root, a cwd that is not the notebook's folder, and a
    symlink in the workspace resolved on the host side."""
    alice, bob, outside = roots["alice"], roots["bob"], roots["outside"]
    body = {"path": "work/n.ipynb", "type": "notebook", "kernel": {"name": "dss-local"}}
    status, session = call(server, "alice", "POST", "api/sessions", body)
    assert status == 201, session
    kernel_id = session["kernel"]["id"]
    try:
        reads = [
            str(alice / "work"),
            "data.txt",
            str(bob),
            str(bob / "secret.txt"),
            f"{alice}/../bob/secret.txt",
            "../../bob/secret.txt",
            str(alice / "to-bob"),
            str(alice / "to-bob" / "secret.txt"),
            "to-outside/host-only.txt",
            str(outside / "host-only.txt"),
        ]
        writes = [
            str(bob / "evil.txt"),
            f"{alice}/../bob/evil.txt",
            str(alice / "to-bob" / "evil.txt"),
            str(server.root_dir / "evil.txt"),
            "to-outside/evil.txt",
        ]
        code = PROBE % json.dumps([[*reads, "to-etc/hostname", str(alice.parent)], writes])
        seen = json.loads(asyncio.run(execute(server, "alice", kernel_id, code)))
    finally:
        call(server, "alice", "DELETE", f"api/sessions/{session['id']}")

    assert seen["own_write"] == "written", seen
    assert seen["cwd"] == str(alice / "work"), seen  # the notebook's folder, at its host path
    assert seen["reads"][str(alice / "work")] == [
        "listed",
        ["data.txt", "out.txt", "to-etc", "to-outside"],
    ]
    assert seen["reads"]["data.txt"] == ["read", ALICES_DATA]
    for path in reads[2:]:
        assert seen["reads"][path][0] == "refused", (path, seen["reads"][path])
        assert BOBS_SECRET not in json.dumps(seen["reads"][path])
    for path in writes:
        assert seen["writes"][path] != "written", (path, seen["writes"])
    # /etc through the link is the container's own (its hostname, not the host's), and
    # above her root the container holds only the folders docker made to mount it
    etc = seen["reads"]["to-etc/hostname"]
    assert etc[0] == "read" and etc[1] != Path("/etc/hostname").read_text(), etc
    assert seen["reads"][str(alice.parent)] == ["listed", ["alice"]]
    # on the host: bob's root untouched, nothing written beside the users' roots
    assert sorted(p.name for p in bob.iterdir()) == ["secret.txt"]
    assert (bob / "secret.txt").read_text() == BOBS_SECRET
    assert not (server.root_dir / "evil.txt").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["host-only.txt"]
    # the uid rule: a root server runs the kernel as the workspace owner, files are theirs
    assert seen["uid"] == "{}:{}".format(*OWNER)
    written = alice / "work" / "out.txt"
    assert written.read_text() == "written by alice's kernel"
    assert (written.stat().st_uid, written.stat().st_gid) == OWNER
    # a private, writable HOME outside her files
    assert seen["home_writable"] and not seen["home"].startswith(str(alice) + "/"), seen
    for _ in range(100):
        if not containers_of(docker_client, server, "alice"):
            break
        time.sleep(0.1)
    assert containers_of(docker_client, server, "alice") == []


async def test_a_notebook_path_through_a_symlink_out_of_her_root_starts_nothing(
    server, roots, docker_client
):
    """Guards the kernel's folder check: a session for ``escape/n.ipynb``, where ``escape``
    is a link alice planted to bob's root, must not start a kernel whose cwd (or mount) is
    bob's folder, nor fall back silently to another folder: it is refused without naming
    bob's folder, and leaves no session, kernel or container."""
    status, reply = await _escape_session(server)
    assert status >= 400, (status, reply)
    assert BOBS_SECRET not in json.dumps(reply) and str(roots["bob"]) not in json.dumps(reply)
    assert await asyncio.to_thread(call, server, "alice", "GET", "api/sessions") == (200, [])
    assert await asyncio.to_thread(call, server, "alice", "GET", "api/kernels") == (200, [])
    assert containers_of(docker_client, server, "alice") == []


async def test_a_notebook_path_through_a_symlink_out_of_her_root_is_a_404(server, roots):
    """Guards the uniform refusal: a path through a link out of her root gets the answer a
    missing path gets (404), not a server error."""
    status, reply = await _escape_session(server)
    assert status == 404, (status, reply)


async def _escape_session(server: ServerProcess) -> tuple[int, object]:
    body = {"path": "escape/n.ipynb", "type": "notebook", "kernel": {"name": "dss-local"}}
    return await asyncio.to_thread(call, server, "alice", "POST", "api/sessions", body)


def test_the_owner_uid_is_not_the_image_fallback():
    """Keeps the uid assertion above meaningful: with :data:`OWNER` equal to the image's
    fallback user, a kernel run as 1000:100 regardless of the folder's owner would pass."""
    from jupyter_dss_containers.workspace import IMAGE_UID_GID

    assert OWNER != IMAGE_UID_GID and OWNER[0] != 0
