"""A multi-user server's shared parts, attacked as a user would, on a real server process.

One jupyter_server subprocess for the module, its users named by the ``X-Test-User``
identity provider (``tests/identity_provider.py``): alice (analysts), bob (analysts,
admins) and eve (no group). The config file opens host kernels and terminals to admins
only. Every refusal is checked to leave nothing behind: no container of the attacker's, no
file outside the attacker's own folder. Servers of their own serve the idle culler, the
stop after refusals, the start-up refusal and the single-user case.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import leftover_containers
from servers import TOKEN, ServerProcess
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_dss_containers import ownership

TESTS = Path(__file__).parent
IDENTITY = "--ServerApp.identity_provider_class=identity_provider.HeaderIdentityProvider"
NO_REAPING = "--DSSContainersExtension.reap_on_start=False"
CONFIG = """
groups: {alice: [analysts], bob: [analysts, admins]}
host_kernels: {groups: [admins]}
terminals: {groups: [admins]}
execution_configs:
  small: {backend: docker, image: default, permissions: {groups: [analysts]}}
  everyone: {backend: docker, image: default, permissions: {groups: ["*"]}}
  gpu: {backend: docker, image: default, permissions: {groups: [gpu-users]}}
  dead-daemon:
    backend: docker
    image: default
    docker: {host: "unix:///tmp/dss-multiuser-no-daemon.sock"}
    permissions: {groups: ["*"]}
"""


def server_env(folder: Path, config: str) -> dict[str, str]:
    """The server's own config file and Jupyter folders; tests/ importable (the provider)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dss_containers.yaml").write_text(config)
    env = dict(os.environ, DSS_CONTAINERS_CONFIG=str(folder / "dss_containers.yaml"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "XDG_DATA_HOME"):
        env[var] = str(folder / var)  # XDG_DATA_HOME: where a deleted file's trash would be
    return env


@contextlib.contextmanager
def multiuser_server(
    folder: Path, config: str, *extra_args: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """A started multi-user server of ``config`` in ``folder`` (test identities, no
    start-up reaping, then ``extra_args``; ``env`` added to its environment), stopped on the
    way out."""
    env = {**server_env(folder, config), **(env or {})}
    proc = ServerProcess(folder, env, extra_args=(IDENTITY, NO_REAPING, *extra_args))
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    with multiuser_server(tmp_path_factory.mktemp("multiuser"), CONFIG) as proc:
        yield proc


def call(server: ServerProcess, user: str, method: str, path: str, body=None, raw=None):
    """(status, JSON or text) for ``path`` sent exactly as written (no dot-segment cleanup)."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Authorization": f"token {TOKEN}", "X-Test-User": user}
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, "/" + path.lstrip("/"), body=data, headers=headers)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    finally:
        connection.close()
    try:
        return response.status, json.loads(text) if text else None
    except ValueError:
        return response.status, text


def open_session(server: ServerProcess, user: str, path: str, kernel: dict | None = None):
    """(status, body) of ``POST api/sessions`` for ``user``'s notebook ``path`` (``kernel``:
    ``{"name": ...}`` or ``{"id": ...}``; none: the path's existing session)."""
    body: dict = {"path": path, "type": "notebook"}
    if kernel is not None:
        body["kernel"] = kernel
    return call(server, user, "POST", "api/sessions", body)


def ws_request(server: ServerProcess, user: str, path: str) -> HTTPRequest:
    url = server.url.replace("http://", "ws://") + path
    return HTTPRequest(url, headers={"Authorization": f"token {TOKEN}", "X-Test-User": user})


def containers_of(docker_client, server: ServerProcess, owner: str) -> list:
    """The owner's containers started by this server process (other tests have users too)."""
    assert server.proc is not None
    mark = f"-{server.proc.pid}-"
    return [
        c
        for c in leftover_containers(docker_client, owner=owner)
        if mark in c.labels.get(ownership.SERVER_ID, "")
    ]


def children(server: ServerProcess) -> list[str]:
    """The command lines of the server process's children (a host kernel would be one)."""
    assert server.proc is not None
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == server.proc.pid:
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


def tree(root: Path, leave_out: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` but ``leave_out``, with its size and mtime."""
    out = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == leave_out:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = os.path.join(folder, name)
            if Path(path) != leave_out:  # her folder's own mtime changes with what is in it
                st = os.lstat(path)
                out[path] = (st.st_size, st.st_mtime_ns)
    return out


class Outside:
    """The files outside eve's folder, as they were at the last :meth:`mark`."""

    def __init__(self, server: ServerProcess):
        self.root, self.eve = server.root_dir, server.root_dir / "eve"
        call(server, "eve", "GET", "api/contents")  # her folder exists from here on
        self.mark()

    def mark(self) -> None:
        self.before = tree(self.root, self.eve)

    def changes(self) -> list[str]:
        now = tree(self.root, self.eve)
        return sorted(p for p in set(now) | set(self.before) if now.get(p) != self.before.get(p))


@pytest.fixture
def nothing_outside_eves_folder(server) -> Iterator[Outside]:
    """Whatever the test does as eve (after its last ``mark()``, when the other users set
    the scene) writes, moves or deletes nothing outside her folder."""
    outside = Outside(server)
    yield outside
    assert outside.changes() == [], "eve changed files outside her own folder"


# --------------------------------------------------------------------------- host kernels


@pytest.mark.docker
def test_eve_gets_no_host_kernel_by_any_route(server, docker_client, nothing_outside_eves_folder):
    """Guards the host kernel gate: the stock ``python3`` runs on the server with its
    credentials, so without ``host_kernels`` it is neither offered nor started."""
    status, specs = call(server, "eve", "GET", "api/kernelspecs")
    assert status == 200 and "python3" not in specs["kernelspecs"]
    assert "dss-everyone" in specs["kernelspecs"]  # her container kernels are still there
    assert "python3" in call(server, "bob", "GET", "api/kernelspecs")[1]["kernelspecs"]

    refusals = [
        call(server, "eve", "POST", "api/kernels", {"name": "python3"}),
        call(server, "eve", "POST", "api/kernels", {}),  # the default kernel is a host one
        call(server, "eve", "GET", "api/kernelspecs/python3"),
        open_session(server, "eve", "a.ipynb", {"name": "python3"}),
    ]
    for status, reply in refusals:
        assert status == 403, reply
        assert "may not use host kernels" in reply["message"] and "admins" in reply["message"]
    status, reply = call(server, "eve", "GET", "lsp/status")  # language servers: host processes
    assert status == 403 and "may not use host kernels" in reply["message"], reply
    assert call(server, "eve", "GET", "api/kernels") == (200, [])
    assert call(server, "eve", "GET", "api/sessions") == (200, [])
    assert containers_of(docker_client, server, "eve") == []
    assert not [c for c in children(server) if "ipykernel" in c], children(server)


# --------------------------------------------------------------------------- terminals


@pytest.mark.docker
async def test_terminals_only_for_users_the_file_names(
    server, docker_client, nothing_outside_eves_folder
):
    """Guards the terminals gate: a terminal is a shell on the server as its user."""
    status, terminal = await asyncio.to_thread(call, server, "bob", "POST", "api/terminals")
    assert status == 200, terminal  # bob is an admin: the gate is a permission, not "off"
    name = terminal["name"]
    try:
        for method, path in (
            ("POST", "api/terminals"),
            ("GET", "api/terminals"),
            ("GET", f"api/terminals/{name}"),
            ("DELETE", f"api/terminals/{name}"),
        ):
            status, reply = await asyncio.to_thread(call, server, "eve", method, path)
            assert status == 403, (method, path, reply)
            assert "may not use terminals" in reply["message"]
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(ws_request(server, "eve", f"terminals/websocket/{name}"))
        assert refused.value.code == 403
        listed = await asyncio.to_thread(call, server, "bob", "GET", "api/terminals")
        assert [t["name"] for t in listed[1]] == [name]  # eve's DELETE removed nothing
    finally:
        await asyncio.to_thread(call, server, "bob", "DELETE", f"api/terminals/{name}")
    assert containers_of(docker_client, server, "eve") == []


# --------------------------------------------------------------------------- contents


BOBS_SECRET = "bob's secret, not for eve"


def test_eve_cannot_read_list_change_or_delete_bobs_files_by_any_path(
    server, nothing_outside_eves_folder
):
    """Guards the per-user root: ``..``, encoded and absolute paths, and symlinks planted
    in eve's own folder (as a container with her folder mounted could plant them) all stay
    inside her folder, with the answer a missing file gets."""
    assert call(server, "bob", "PUT", "api/contents/secret.txt", _text(BOBS_SECRET))[0] == 201
    assert call(server, "bob", "PUT", "api/contents/private", {"type": "directory"})[0] == 201
    bob, eve = server.root_dir / "bob", server.root_dir / "eve"
    assert (bob / "secret.txt").read_text() == BOBS_SECRET
    assert eve.is_dir() and (eve.stat().st_mode & 0o777) == 0o700
    (eve / "to-bob").symlink_to(bob)
    (eve / "bobs-file").symlink_to(bob / "secret.txt")
    absolute = str(bob / "secret.txt")
    nothing_outside_eves_folder.mark()

    reads = [
        "api/contents/../bob/secret.txt",
        "api/contents/%2e%2e/bob/secret.txt",
        "api/contents/..%2fbob%2fsecret.txt",
        "api/contents/%2E%2E%2Fbob%2Fsecret.txt",
        f"api/contents/{absolute}",
        f"api/contents/{absolute.replace('/', '%2F')}",
        "api/contents/..",
        "api/contents/../bob",
        "api/contents/to-bob/secret.txt",
        "api/contents/to-bob",
        "api/contents/bobs-file",
        "files/../bob/secret.txt",
        "files/..%2fbob%2fsecret.txt",
        "files/to-bob/secret.txt",
        "files/bobs-file",
        f"files/{absolute}",
        "view/..%2fbob%2fsecret.txt",
    ]
    for path in reads:
        status, reply = call(server, "eve", "GET", path)
        assert status == 404, (path, status, reply)
        assert BOBS_SECRET not in json.dumps(reply), path
    writes = [
        ("PUT", "api/contents/../bob/evil.txt", _text("eve was here")),
        ("PUT", "api/contents/to-bob/evil.txt", _text("eve was here")),
        ("PUT", "api/contents/bobs-file", _text("eve was here")),
        ("PATCH", "api/contents/bobs-file", {"path": "stolen.txt"}),
        ("PATCH", "api/contents/..%2fbob%2fsecret.txt", {"path": "stolen.txt"}),
        ("PATCH", "api/contents/mine.txt", {"path": "../bob/mine.txt"}),
        ("POST", "api/contents", {"copy_from": "../bob/secret.txt"}),
        ("POST", "api/contents", {"copy_from": "bobs-file"}),
        ("POST", "api/contents/to-bob", {"type": "file"}),
        ("DELETE", "api/contents/../bob/secret.txt", None),
        ("DELETE", "api/contents/%2e%2e%2fbob%2fprivate", None),
        ("DELETE", "api/contents/to-bob/secret.txt", None),
        ("DELETE", "api/contents/bobs-file", None),
        ("POST", "api/contents/bobs-file/checkpoints", None),
    ]
    for method, path, body in writes:
        status, reply = call(server, "eve", method, path, body)
        assert 400 <= status < 500, (method, path, status, reply)
        assert BOBS_SECRET not in json.dumps(reply), path
    # her own (empty) checkpoint list of the planted name, nothing of bob's file
    assert call(server, "eve", "GET", "api/contents/bobs-file/checkpoints") == (200, [])
    listing = call(server, "eve", "GET", "api/contents")[1]
    assert listing["type"] == "directory" and listing["path"] == ""
    assert {e["name"] for e in listing["content"]} == set()  # links out are not listed
    assert (bob / "secret.txt").read_text() == BOBS_SECRET and (bob / "private").is_dir()
    assert sorted(p.name for p in bob.iterdir()) == ["private", "secret.txt"]
    assert sorted(p.name for p in eve.iterdir() if p.name != ".ipynb_checkpoints") == [
        "bobs-file",
        "to-bob",
    ]
    assert not list(eve.glob(".ipynb_checkpoints/*"))  # no copy of bob's file either
    status, mine = call(server, "bob", "GET", "api/contents/secret.txt")
    assert status == 200 and mine["content"] == BOBS_SECRET  # bob is served as before
    # her own file she may delete: removed, not kept in the server user's shared trash
    assert call(server, "eve", "PUT", "api/contents/mine.txt", _text("x"))[0] == 201
    assert call(server, "eve", "DELETE", "api/contents/mine.txt")[0] == 204
    assert not (eve / "mine.txt").exists()
    assert not list((server.folder / "XDG_DATA_HOME").rglob("mine.txt*"))


def _text(content: str) -> dict:
    return {"type": "file", "format": "text", "content": content}


def kernel_cwd(server: ServerProcess, kernel_id: str) -> str:
    """The working folder of the server's child process that runs this host kernel."""
    assert server.proc is not None
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != server.proc.pid:
                continue
            if kernel_id in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
                return os.readlink(stat.parent / "cwd")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    raise AssertionError(f"no child process runs kernel {kernel_id}: {children(server)}")


def test_a_host_kernel_starts_in_the_notebooks_folder_inside_its_users_root(server):
    """Guards the kernel's folder, looked up in a thread (off the event loop) with the
    request's user: it must be the notebook's folder in bob's own root, or that root when
    the folder is missing; never the server's root, nor a folder named in another root."""
    assert call(server, "bob", "PUT", "api/contents/deep", {"type": "directory"})[0] == 201
    (server.root_dir / "deep").mkdir(exist_ok=True)  # the same name in the server's root
    bob_root = server.root_dir / "bob"
    sessions = []
    try:
        for path, expected in (("deep/n.ipynb", bob_root / "deep"), ("gone/n.ipynb", bob_root)):
            status, session = open_session(server, "bob", path, {"name": "python3"})
            assert status == 201, session
            sessions.append(session["id"])
            assert kernel_cwd(server, session["kernel"]["id"]) == str(expected.resolve())
    finally:
        for session_id in sessions:
            call(server, "bob", "DELETE", f"api/sessions/{session_id}")


@pytest.mark.docker
def test_two_users_each_have_their_own_files_and_sessions_by_the_same_name(
    server, base_image, docker_client
):
    """Guards sessions per user: the same path names two users' own files, and a session
    of one does not squat the other's path (it used to answer the other with 404)."""
    for user in ("alice", "bob"):
        assert call(server, user, "PUT", "api/contents/same.txt", _text(user))[0] == 201
        assert call(server, user, "GET", "api/contents/same.txt")[1]["content"] == user
    # bob's session on his host kernel; alice cannot see it, and may open her own file
    status, bobs = open_session(server, "bob", "same.ipynb", {"name": "python3"})
    assert status == 201, bobs
    try:
        assert call(server, "alice", "GET", "api/sessions") == (200, [])
        status, reply = call(server, "alice", "GET", f"api/sessions/{bobs['id']}")
        assert status == 404 and bobs["kernel"]["id"] not in json.dumps(reply)
        status, theirs = open_session(server, "alice", "same.ipynb", {"id": bobs["kernel"]["id"]})
        assert (
            status == 404 and theirs["message"] == f"Kernel does not exist: {bobs['kernel']['id']}"
        )
        assert [s["id"] for s in call(server, "bob", "GET", "api/sessions")[1]] == [bobs["id"]]
        # alice opens her own same.ipynb: a session of her own, not bob's, not a 404
        status, hers = open_session(server, "alice", "same.ipynb", {"name": "dss-small"})
        assert status == 201, hers
        assert hers["id"] != bobs["id"] and hers["kernel"]["id"] != bobs["kernel"]["id"]
        again = open_session(server, "alice", "same.ipynb")
        assert again[1]["id"] == hers["id"]  # the existing session of *her* path
        assert [s["id"] for s in call(server, "alice", "GET", "api/sessions")[1]] == [hers["id"]]
        assert [s["id"] for s in call(server, "bob", "GET", "api/sessions")[1]] == [bobs["id"]]
        call(server, "alice", "DELETE", f"api/sessions/{hers['id']}")
        for _ in range(100):
            if not containers_of(docker_client, server, "alice"):
                break
            time.sleep(0.1)
        assert containers_of(docker_client, server, "alice") == []
    finally:
        call(server, "bob", "DELETE", f"api/sessions/{bobs['id']}")


def test_server_wide_actions_are_the_administrators(server):
    """Guards the admin-only actions: a user of a multi-user server may not stop the server
    for everyone or write the frontend config all users load (``/api/config``, whose
    ``load_extensions`` would run code in other users' browsers); /api/me still answers."""
    for method, path, body in (
        ("POST", "api/shutdown", None),
        ("PUT", "api/config/notebook", {"load_extensions": {"evil/main": True}}),
        ("PATCH", "api/config/notebook", {"load_extensions": {"evil/main": True}}),
    ):
        for user in ("eve", "bob"):
            status, reply = call(server, user, method, path, body)
            assert status == 403, (user, path, reply)
            assert "administrator" in (reply["message"] if isinstance(reply, dict) else reply)
    assert call(server, "eve", "GET", "api/config/notebook") == (200, {})
    assert call(server, "eve", "GET", "api/status")[0] == 200  # still up
    asked = 'api/me?permissions={"terminals":["execute"],"lsp":["read"],"contents":["read"]}'
    status, me = call(server, "eve", "GET", asked.replace('"', "%22"))
    assert status == 200 and me["identity"]["username"] == "eve", me
    mine = {k: me["permissions"][k] for k in ("terminals", "lsp", "contents")}
    assert mine == {"terminals": [], "lsp": [], "contents": ["read"]}
    bobs = call(server, "bob", "GET", asked.replace('"', "%22"))[1]["permissions"]
    assert {k: bobs[k] for k in mine} == {
        "terminals": ["execute"],
        "lsp": ["read"],
        "contents": ["read"],
    }


# --------------------------------------------------------------------------- events


async def _events_until(socket, last: dict) -> list[dict]:
    """Events from ``socket`` until one matching every item of ``last`` arrives."""
    seen: list[dict] = []
    while True:
        message = await asyncio.wait_for(socket.read_message(), 30)
        assert message is not None, f"the event socket closed after {seen}"
        seen.append(json.loads(message))
        if all(seen[-1].get(k) == v for k, v in last.items()):
            return seen


async def test_the_event_bus_gives_eve_none_of_bobs_events(server):
    """Guards the event filter: file paths and kernel ids of one user's actions reach no
    other user's subscription, while each user still gets their own."""
    sockets = {
        u: await websocket_connect(ws_request(server, u, "api/events/subscribe"))
        for u in ("eve", "bob")
    }
    try:
        await asyncio.to_thread(call, server, "bob", "PUT", "api/contents/plans.txt", _text("x"))
        status, kernel = await asyncio.to_thread(
            call, server, "bob", "POST", "api/kernels", {"name": "python3"}
        )
        assert status == 201, kernel
        await asyncio.to_thread(call, server, "bob", "DELETE", f"api/kernels/{kernel['id']}")
        await asyncio.to_thread(call, server, "eve", "PUT", "api/contents/mine.txt", _text("x"))

        eves = await _events_until(sockets["eve"], {"action": "save", "path": "mine.txt"})
        bobs = await _events_until(
            sockets["bob"], {"action": "shutdown", "kernel_id": kernel["id"]}
        )
    finally:
        for socket in sockets.values():
            socket.close()
    text = json.dumps(eves)
    assert "plans.txt" not in text and kernel["id"] not in text, eves
    assert {e.get("path") for e in eves} == {"mine.txt"}
    assert {"plans.txt", None} == {e.get("path") for e in bobs}
    assert "mine.txt" not in json.dumps(bobs)
    assert {e["action"] for e in bobs if e.get("kernel_id") == kernel["id"]} >= {
        "start",
        "shutdown",
    }


# --------------------------------------------------------------------------- bad input


def test_malformed_input_is_answered_4xx_on_our_routes_and_the_wrapped_core_ones(server):
    """Guards the input bounds: each of these used to be a 500 (or a server stuck parsing)."""
    nested = b"[" * 200000
    digits = b'{"timeout": ' + b"1" * 5000 + b"}"
    session = open_session(server, "bob", "bad.ipynb", {"name": "python3"})[1]
    try:
        cases = [
            ("POST", "dss-containers/api/jobs", nested),
            ("POST", "dss-containers/api/configs/small/test", nested),
            ("POST", "dss-containers/api/configs/small/test", digits),
            (
                "POST",
                "dss-containers/api/jobs",
                b'{"config": "small", "code": 1' + b"0" * 5000 + b"}",
            ),
            ("POST", "dss-containers/api/jobs", b" " * (1024**2 + 10) + b"{}"),
            ("GET", "dss-containers/api/kernels/x/logs?tail=%C2%B2", None),
            ("GET", "dss-containers/api/kernels/x/logs?tail=" + "9" * 5000, None),
            ("GET", "dss-containers/api/jobs/x/logs?since=%D9%A3", None),
            ("POST", "api/kernels", nested),
            ("POST", "api/kernels", digits),
            ("POST", "api/kernels", b"[]"),
            ("POST", "api/kernels", b'{"name": 3}'),
            ("POST", "api/sessions", nested),
            ("POST", "api/sessions", b'"x"'),
            ("POST", "api/sessions", b'{"path": "a", "type": "notebook", "kernel": "x"}'),
            ("POST", "api/sessions", b'{"path": 1, "type": "notebook"}'),
            ("PATCH", f"api/sessions/{session['id']}", nested),
            ("PATCH", f"api/sessions/{session['id']}", b'{"kernel": []}'),
            ("PATCH", f"api/sessions/{session['id']}", b'{"kernel": {"name": 7}}'),
            ("PUT", "api/contents/n.ipynb", nested),
            ("POST", "api/events", nested),
        ]
        for method, path, raw in cases:
            status, reply = call(server, "bob", method, path, raw=raw)
            assert 400 <= status < 500, (method, path, status, str(reply)[:300])
            assert isinstance(reply, dict) and reply.get("message"), (method, path, reply)
            assert "Traceback" not in json.dumps(reply)
            assert "%s" not in reply["message"], reply
        assert call(server, "bob", "GET", "api/status")[0] == 200  # still serving
        assert [s["id"] for s in call(server, "bob", "GET", "api/sessions")[1]] == [session["id"]]
    finally:
        call(server, "bob", "DELETE", f"api/sessions/{session['id']}")


def test_a_missing_kernel_or_job_and_another_users_answer_alike(server):
    """Guards the "does not exist" oracle: the same 404 text for missing and not yours,
    with no literal ``%s`` and no id but the one asked for."""
    status, kernel = call(server, "bob", "POST", "api/kernels", {"name": "python3"})
    assert status == 201
    missing = "00000000-0000-0000-0000-000000000000"
    try:
        for kernel_id in (kernel["id"], missing):
            for method, path in (
                ("GET", f"api/kernels/{kernel_id}"),
                ("DELETE", f"api/kernels/{kernel_id}"),
                ("POST", f"api/kernels/{kernel_id}/interrupt"),
                ("POST", f"api/kernels/{kernel_id}/restart"),
                ("GET", f"dss-containers/api/kernels/{kernel_id}/logs"),
            ):
                status, reply = call(server, "eve", method, path, raw=b"")
                assert (status, reply["message"]) == (404, f"Kernel does not exist: {kernel_id}")
        body = {"config": "dead-daemon", "code": "print('bob only')"}
        status, job = call(server, "bob", "POST", "dss-containers/api/jobs", body)
        assert status == 201, job  # it fails at once on the dead daemon, starting nothing
        for job_id in (job["id"], "0123456789ab"):
            for method, path in (
                ("GET", f"dss-containers/api/jobs/{job_id}"),
                ("GET", f"dss-containers/api/jobs/{job_id}/logs"),
                ("DELETE", f"dss-containers/api/jobs/{job_id}"),
            ):
                status, reply = call(server, "eve", method, path)
                assert (status, reply["message"]) == (404, f"Job does not exist: {job_id}")
        status, reply = call(server, "eve", "GET", "dss-containers/api/jobs/%25s")
        assert (status, reply["message"]) == (404, "Job does not exist: %s")  # echoed, not a format
        assert call(server, "bob", "GET", f"dss-containers/api/jobs/{job['id']}")[0] == 200
        assert call(server, "bob", "GET", f"api/kernels/{kernel['id']}")[0] == 200
    finally:
        call(server, "bob", "DELETE", f"api/kernels/{kernel['id']}")


# --------------------------------------------------------------------------- own servers


@pytest.mark.docker
def test_the_culler_culls_every_users_idle_container_kernels(tmp_path, base_image, docker_client):
    """Guards the culler's context: it used to run as the user whose request started it
    first, so only that user's kernels were culled (the others logged "does not exist")."""
    with multiuser_server(
        tmp_path,
        CONFIG,
        "--MappingKernelManager.cull_idle_timeout=2",
        "--MappingKernelManager.cull_interval=1",
    ) as proc:
        kernels = {}
        for user in ("alice", "bob"):
            status, kernel = call(proc, user, "POST", "api/kernels", {"name": "dss-small"})
            assert status == 201, kernel
            kernels[user] = kernel["id"]
        for _ in range(300):
            alive = [u for u in kernels if call(proc, u, "GET", "api/kernels")[1]]
            if not alive:
                break
            time.sleep(0.2)
        assert not alive, f"the culler left the idle kernels of {alive}:\n{proc.tail()}"
        for user, kernel_id in kernels.items():
            assert f"({kernel_id}) with 0 connections due to" in proc.log.read_text()
            for _ in range(100):
                if not containers_of(docker_client, proc, user):
                    break
                time.sleep(0.1)
            assert containers_of(docker_client, proc, user) == []
        assert "Kernel does not exist" not in proc.log.read_text()


HOST_FOR_ANALYSTS = CONFIG.replace(
    "host_kernels: {groups: [admins]}", "host_kernels: {groups: [analysts]}"
)


def test_refused_session_patches_and_starts_then_sigterm_stops_the_server(tmp_path):
    """Guards the stop after refusals: a failed kernel start used to stay among the pending
    kernels, the server's shutdown then raised on it and SIGTERM no longer stopped it; and a
    session PATCH to a forbidden kernel answered 501."""
    proc = ServerProcess(
        tmp_path, server_env(tmp_path, HOST_FOR_ANALYSTS), extra_args=(IDENTITY, NO_REAPING)
    ).start()
    try:
        body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
        status, alices = call(proc, "alice", "POST", "api/sessions", body)
        assert status == 201, alices
        status, bobs = call(proc, "bob", "POST", "api/kernels", {"name": "python3"})
        assert status == 201, bobs
        patch = f"api/sessions/{alices['id']}"
        refusals = {
            "to bob's kernel": call(proc, "alice", "PATCH", patch, {"kernel": {"id": bobs["id"]}}),
            "to a forbidden config": call(
                proc, "alice", "PATCH", patch, {"kernel": {"name": "dss-gpu"}}
            ),
            "eve's, to a host kernel": call(
                proc, "eve", "PATCH", patch, {"kernel": {"name": "python3"}}
            ),
            "a start on a dead daemon": call(
                proc, "alice", "POST", "api/kernels", {"name": "dss-dead-daemon"}
            ),
            "bob's kernel by its id": call(
                proc, "alice", "POST", "api/kernels", {"name": "python3", "kernel_id": bobs["id"]}
            ),
        }
        expected = {
            "to bob's kernel": 404,
            "to a forbidden config": 403,
            "eve's, to a host kernel": 404,
            "a start on a dead daemon": 503,
            "bob's kernel by its id": 404,
        }
        assert {k: s for k, (s, _) in refusals.items()} == expected, refusals
        assert "gpu-users" in refusals["to a forbidden config"][1]["message"]
        status, still = call(proc, "alice", "GET", patch)
        assert status == 200 and still["kernel"]["id"] == alices["kernel"]["id"]
        assert call(proc, "bob", "GET", f"api/kernels/{bobs['id']}")[0] == 200
    finally:
        assert proc.proc is not None
        os.killpg(proc.proc.pid, signal.SIGTERM)
        try:
            proc.proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"SIGTERM did not stop the server:\n{proc.tail()}")
    assert "Exception in callback" not in proc.log.read_text(), proc.tail()


def test_a_shared_contents_manager_under_several_users_refuses_to_start(tmp_path):
    """Guards the start-up refusal: a site's own contents manager would serve every user
    the same tree, so the server does not start, and says why."""
    proc = ServerProcess(
        tmp_path,
        server_env(tmp_path, CONFIG),
        extra_args=(
            IDENTITY,
            NO_REAPING,
            "--ServerApp.contents_manager_class="
            "jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager",
        ),
    )
    with pytest.raises(pytest.fail.Exception):
        proc.start()
    assert proc.proc is not None and proc.proc.returncode == 1
    log = proc.log.read_text()
    assert (
        "refusing to start" in log and "contents manager" in log and "AsyncLargeFileManager" in log
    )


def test_a_single_user_server_is_unchanged(tmp_path):
    """Guards "nothing changes" under the stock token provider: host kernels, terminals and
    the whole root stay the server owner's."""
    proc = ServerProcess(tmp_path, server_env(tmp_path, CONFIG), extra_args=(NO_REAPING,)).start()
    try:
        assert "python3" in call(proc, "anyone", "GET", "api/kernelspecs")[1]["kernelspecs"]
        status, terminal = call(proc, "anyone", "POST", "api/terminals")
        assert status == 200, terminal
        call(proc, "anyone", "DELETE", f"api/terminals/{terminal['name']}")
        assert call(proc, "anyone", "PUT", "api/contents/top.txt", _text("x"))[0] == 201
        assert (proc.root_dir / "top.txt").read_text() == "x"
        assert call(proc, "anyone", "DELETE", "api/contents/top.txt")[0] == 204
        assert list((tmp_path / "XDG_DATA_HOME").rglob("top.txt"))  # trashed, as ever
    finally:
        proc.stop()


def test_the_owner_of_a_hub_server_keeps_it_all_and_a_guest_does_not(tmp_path):
    """Guards the JupyterHub owner: their single-user server is their own process, so they
    keep host kernels, terminals and the whole root; a guest the hub lets in does not."""
    with multiuser_server(tmp_path, CONFIG, env={"JUPYTERHUB_USER": "eve"}) as proc:
        assert "python3" in call(proc, "eve", "GET", "api/kernelspecs")[1]["kernelspecs"]
        status, terminal = call(proc, "eve", "POST", "api/terminals")
        assert status == 200, terminal
        call(proc, "eve", "DELETE", f"api/terminals/{terminal['name']}")
        assert call(proc, "eve", "PUT", "api/contents/top.txt", _text("eve's"))[0] == 201
        assert (proc.root_dir / "top.txt").read_text() == "eve's"
        # alice is a guest here: her own folder, no host kernel, no terminal
        assert "python3" not in call(proc, "alice", "GET", "api/kernelspecs")[1]["kernelspecs"]
        assert call(proc, "alice", "POST", "api/terminals")[0] == 403
        assert call(proc, "alice", "GET", "api/contents/top.txt")[0] == 404
        assert call(proc, "alice", "PUT", "api/contents/top.txt", _text("alice's"))[0] == 201
        assert (proc.root_dir / "alice" / "top.txt").read_text() == "alice's"
        assert (proc.root_dir / "top.txt").read_text() == "eve's"
