"""The proxy route into a container kernel's ports, on a real multi-user server.

A real jupyter_server subprocess (users named by ``X-Test-User``: alice and bob) starts a
container kernel for alice on the real Docker engine; the kernel starts ``python -m
http.server`` and a tiny tornado websocket echo on 127.0.0.1 inside its container. The page
and one websocket round trip go through ``<base_url>/dss-containers/proxy/<id>/<port>/``
(no port of the container is published); bob, and anyone naming a missing kernel, gets the
same 404. The pure parts (what the app is sent, what it may send back, the variables a
kernel gets, the daemon's stream framing) are tested without any engine.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
import struct
import textwrap
import time
import uuid
from collections.abc import Iterator
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import pytest
from servers import TOKEN, ServerProcess, ws_execute
from test_multiuser import multiuser_server
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders
from tornado.websocket import websocket_connect

from jupyter_dss_containers import ownership
from jupyter_dss_containers.backends.docker.forward import forwarder_command, frames
from jupyter_dss_containers.proxyenv import proxy_env, proxy_prefix
from jupyter_dss_containers.server.proxy import (
    kept_cookies,
    parse_port,
    rewrite_location,
    sets_reserved_cookie,
    upstream_headers,
    upstream_target,
)

CONFIG = """
groups: {alice: [analysts], bob: [analysts]}
execution_configs:
  small: {backend: docker, image: default, permissions: {groups: [analysts]}}
"""
HTTP_PORT, WS_PORT = 8123, 8124
#: run in the kernel: a page server and a websocket echo, both on the container's loopback
APPS = textwrap.dedent(
    f"""
    import os, subprocess, sys, tempfile
    site = tempfile.mkdtemp()
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write("<html><title>proxied</title><body id=marker>served from the container"
                "</body></html>")
    subprocess.Popen([sys.executable, "-m", "http.server", "{HTTP_PORT}", "--bind",
                      "127.0.0.1", "--directory", site],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    echo = '''
    import asyncio, tornado.web, tornado.websocket
    import json
    class Echo(tornado.websocket.WebSocketHandler):
        def on_message(self, message):
            self.write_message("echo:" + message)
    class Seen(tornado.web.RequestHandler):
        def check_xsrf_cookie(self):
            pass
        def get(self):
            self.finish(json.dumps({{"uri": self.request.uri,
                                    "headers": dict(self.request.headers)}}))
        def post(self):
            self.finish(json.dumps({{"uri": self.request.uri,
                                    "body": self.request.body.decode(),
                                    "headers": dict(self.request.headers)}}))
    class Stream(tornado.web.RequestHandler):
        async def get(self):
            for i in range(3):
                self.write("part %d;" % i)
                await self.flush()
    class Moved(tornado.web.RequestHandler):
        def get(self):
            self.redirect("/seen")
    async def main():
        routes = [(r"/echo", Echo), (r"/seen", Seen), (r"/stream", Stream), (r"/moved", Moved)]
        tornado.web.Application(routes).listen({WS_PORT}, address="127.0.0.1")
        await asyncio.Event().wait()
    asyncio.run(main())
    '''
    subprocess.Popen([sys.executable, "-c", echo],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(os.environ.get("TENSORBOARD_PROXY_URL"))
    """
)


def call(server: ServerProcess, user: str, method: str, path: str, headers=None, body=None):
    """(status, headers, body bytes) of one request sent exactly as written."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    sent = {"Authorization": f"token {TOKEN}", "X-Test-User": user, **(headers or {})}
    try:
        connection.request(method, "/" + path.lstrip("/"), body=body, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def ws_request(server: ServerProcess, user: str, path: str, **headers: str) -> HTTPRequest:
    url = server.url.replace("http://", "ws://") + path
    sent = {"Authorization": f"token {TOKEN}", "X-Test-User": user, **headers}
    return HTTPRequest(url, headers=sent)


async def _connect(request: HTTPRequest) -> None:
    (await websocket_connect(request)).close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_image) -> Iterator[ServerProcess]:
    with multiuser_server(tmp_path_factory.mktemp("proxy"), CONFIG) as proc:
        yield proc


@pytest.fixture(scope="module")
def alices_kernel(server) -> Iterator[tuple[str, str]]:
    """(kernel id, what its TENSORBOARD_PROXY_URL is) of alice's kernel running both apps."""
    status, _, body = call(
        server,
        "alice",
        "POST",
        "api/kernels",
        {"Content-Type": "application/json"},
        json.dumps({"name": "dss-small"}),
    )
    assert status == 201, body
    kernel_id = json.loads(body)["id"]
    channels = ws_request(server, "alice", f"api/kernels/{kernel_id}/channels")
    printed = asyncio.run(ws_execute(channels, "alice", APPS, strict=True))
    try:
        _wait_for_page(server, kernel_id)
        yield kernel_id, printed.strip()
    finally:
        call(server, "alice", "DELETE", f"api/kernels/{kernel_id}")


def _wait_for_page(server: ServerProcess, kernel_id: str) -> None:
    """Until the page server in the container listens (its start is the kernel's affair)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, _, _ = call(
            server, "alice", "GET", f"dss-containers/proxy/{kernel_id}/{HTTP_PORT}/"
        )
        if status == 200:
            return
        time.sleep(0.3)
    pytest.fail(f"the page server never answered through the proxy:\n{server.tail()}")


# --------------------------------------------------------------------------- real server


@pytest.mark.docker
def test_page_loads_through_the_proxy_route(server, alices_kernel):
    """Guards the HTTP path end to end: route, ownership check, docker exec forwarder,
    tornado's HTTP/1.1 client over it, the relayed status, headers and body."""
    kernel_id, _ = alices_kernel
    status, headers, body = call(
        server, "alice", "GET", f"dss-containers/proxy/{kernel_id}/{HTTP_PORT}/index.html?x=1"
    )
    assert status == 200
    assert b"served from the container" in body
    assert headers.get("Content-Type", "").startswith("text/html")
    status, headers, body = call(
        server, "alice", "HEAD", f"dss-containers/proxy/{kernel_id}/{HTTP_PORT}/index.html"
    )
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    # a missing file is the app's own 404, relayed as it is
    status, _, body = call(
        server, "alice", "GET", f"dss-containers/proxy/{kernel_id}/{HTTP_PORT}/nope"
    )
    assert status == 404 and b"File not found" in body


@pytest.mark.docker
def test_the_app_sees_itself_addressed_and_no_jupyter_credentials(server, alices_kernel):
    """Guards what crosses into the container, as the app itself reports it: the body and
    the path, its own cookie and origin, and none of the Jupyter token, XSRF or login
    cookie; and a streamed (chunked) answer comes back whole."""
    kernel_id, _ = alices_kernel
    cookie = login_cookie(server) + "; _xsrf=secret; app=kept"
    path = f"dss-containers/proxy/{kernel_id}/{WS_PORT}/seen?a=1&token={TOKEN}"
    status, _, body = call(
        server,
        "alice",
        "POST",
        path,
        {"Cookie": cookie, "Origin": server.url.rstrip("/")},
        b"payload",
    )
    assert status == 200, body
    seen = json.loads(body)
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["uri"] == "/seen?a=1" and seen["body"] == "payload"
    assert "authorization" not in headers
    assert headers["cookie"] == "app=kept"
    assert headers["host"] == f"localhost:{WS_PORT}"
    assert headers["origin"] == f"http://localhost:{WS_PORT}"
    assert headers["x-forwarded-prefix"] == f"/dss-containers/proxy/{kernel_id}/{WS_PORT}"
    assert TOKEN not in body.decode()
    page = f"dss-containers/proxy/{kernel_id}/{WS_PORT}"
    status, headers, body = call(server, "alice", "GET", f"{page}/stream")
    assert status == 200 and body == b"part 0;part 1;part 2;"
    status, headers, _ = call(server, "alice", "GET", f"{page}/moved")
    assert status == 302 and headers["Location"] == f"/{page}/seen"


@pytest.mark.docker
def test_no_slash_redirects_into_the_app_and_a_closed_port_says_why(server, alices_kernel):
    """Guards the two answers the owner gets that are not the app's: the folder redirect
    (relative links of the app need it) and the 502 that says nothing listens."""
    kernel_id, _ = alices_kernel
    status, headers, _ = call(
        server, "alice", "GET", f"dss-containers/proxy/{kernel_id}/{HTTP_PORT}"
    )
    assert status == 302
    assert headers["Location"].endswith(f"/dss-containers/proxy/{kernel_id}/{HTTP_PORT}/")
    status, _, body = call(server, "alice", "GET", f"dss-containers/proxy/{kernel_id}/8199/")
    assert status == 502
    assert "Connection refused" in json.loads(body)["message"]
    status, _, _ = call(server, "alice", "GET", f"dss-containers/proxy/{kernel_id}/99999/")
    assert status == 400


@pytest.mark.docker
def test_websocket_round_trip_through_the_proxy_route(server, alices_kernel, docker_client):
    """Guards the websocket tunnel: the handshake reaches the app (whose tornado checks
    Origin against Host), its 101 comes back, and frames pass both ways; and no forwarder
    outlives its connection in the container."""
    kernel_id, _ = alices_kernel
    path = f"dss-containers/proxy/{kernel_id}/{WS_PORT}/echo"
    origin = server.url.rstrip("/")

    async def round_trip() -> str | None:
        ws = await websocket_connect(ws_request(server, "alice", path, Origin=origin))
        try:
            await ws.write_message("hello")
            return await asyncio.wait_for(ws.read_message(), 30)
        finally:
            ws.close()

    assert asyncio.run(round_trip()) == "echo:hello"
    # the forwarders of every connection so far end with their connections
    [container] = docker_client.containers.list(
        filters={"label": f"{ownership.KERNEL_ID}={kernel_id}"}
    )
    deadline = time.monotonic() + 60
    while forwarders(container) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert forwarders(container) == []


def forwarders(container) -> list[str]:
    """The command lines of the forwarders running in a container."""
    rows = container.top(ps_args="-eo pid,args")["Processes"] or []
    return [row[-1] for row in rows if "dss-forward" in row[-1]]


def login_cookie(server: ServerProcess) -> str:
    """A browser's login cookie (no token header on later requests: origin checks apply)."""
    url = urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request("GET", f"/api/status?token={TOKEN}")
        response = connection.getresponse()
        response.read()
        cookie = SimpleCookie(response.getheader("Set-Cookie"))
    finally:
        connection.close()
    return "; ".join(f"{name}={morsel.value}" for name, morsel in cookie.items())


@pytest.mark.docker
def test_cross_site_requests_with_the_owners_cookie_are_refused(server, alices_kernel):
    """Guards against cross-site websocket hijacking and cross-site writes: a page of
    another origin cannot use the owner's app with the owner's login cookie, while the
    server's own pages can (a websocket, and a write without Jupyter's _xsrf, as Dash
    callbacks post)."""
    kernel_id, _ = alices_kernel
    cookie, own = login_cookie(server), server.url.rstrip("/")
    path = f"dss-containers/proxy/{kernel_id}/{WS_PORT}/echo"

    def by_cookie(origin: str) -> HTTPRequest:
        headers = {"Cookie": cookie, "X-Test-User": "alice", "Origin": origin}
        return HTTPRequest(server.url.replace("http://", "ws://") + path, headers=headers)

    with pytest.raises(HTTPClientError) as caught:
        asyncio.run(_connect(by_cookie("http://evil.example")))
    assert caught.value.code == 403
    asyncio.run(_connect(by_cookie(own)))  # the same cookie from the server's own page

    page = f"/dss-containers/proxy/{kernel_id}/{HTTP_PORT}/"
    url = urlsplit(server.url)
    answers = {}
    for origin in ("http://evil.example", own):
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Cookie": cookie, "X-Test-User": "alice", "Origin": origin}
        try:
            connection.request("POST", page, body=b"{}", headers=headers)
            answers[origin] = connection.getresponse().status
        finally:
            connection.close()
    assert answers["http://evil.example"] in (403, 404)
    assert answers[own] == 501  # http.server's own answer to a POST: it reached the app


@pytest.mark.docker
def test_another_user_gets_the_same_404_as_for_a_missing_kernel(server, alices_kernel):
    """Guards owner-only access without an oracle: bob's answers for alice's kernel (HTTP,
    redirect form, websocket) are byte for byte those for a kernel that does not exist."""
    kernel_id, _ = alices_kernel
    missing = str(uuid.uuid4())
    for suffix in (f"{HTTP_PORT}/", f"{HTTP_PORT}", "99999/"):
        theirs = call(server, "bob", "GET", f"dss-containers/proxy/{kernel_id}/{suffix}")
        nobodys = call(server, "bob", "GET", f"dss-containers/proxy/{missing}/{suffix}")
        assert theirs[0] == nobodys[0] == 404
        assert theirs[2].replace(kernel_id.encode(), b"ID") == nobodys[2].replace(
            missing.encode(), b"ID"
        )
    status, _, _ = call(
        server, "bob", "POST", f"dss-containers/proxy/{kernel_id}/{HTTP_PORT}/", body=b"x"
    )
    assert status == 404
    request = ws_request(server, "bob", f"dss-containers/proxy/{kernel_id}/{WS_PORT}/echo")
    with pytest.raises(HTTPClientError) as caught:
        asyncio.run(_connect(request))
    assert caught.value.code == 404


@pytest.mark.docker
def test_nothing_is_published_on_a_host_port(server, alices_kernel, docker_client):
    """Guards "through the engine, not a published port": the kernel's container has no
    port binding at all while its apps are reached."""
    kernel_id, _ = alices_kernel
    [container] = docker_client.containers.list(
        filters={"label": f"{ownership.KERNEL_ID}={kernel_id}"}
    )
    container.reload()
    assert not container.attrs["HostConfig"].get("PortBindings")
    assert not any(container.attrs["NetworkSettings"].get("Ports", {}).values())


@pytest.mark.docker
def test_the_kernel_knows_its_proxy_url(alices_kernel):
    """Guards the variables: TensorBoard's magic builds its iframe URL from this one."""
    kernel_id, tensorboard = alices_kernel
    assert tensorboard == f"/dss-containers/proxy/{kernel_id}/%PORT%/"


# --------------------------------------------------------------------------- pure parts


def test_the_app_gets_no_jupyter_credentials():
    """Guards the app's view: no token (header, query, cookie), no hub cookie, addressed as
    itself, told where the browser is; its own cookies pass."""
    incoming = HTTPHeaders(
        {
            "Authorization": "token secret",
            "Cookie": "_xsrf=a; username-127-0-0-1-8888=b; jupyterhub-session-id=c; app=d",
            "Host": "jupyter.example:8888",
            "Origin": "http://jupyter.example:8888",
            "Connection": "keep-alive, X-Secret",
            "X-Secret": "hop",
            "X-Forwarded-For": "spoofed",
            "Accept": "text/html",
        }
    )
    out = upstream_headers(
        incoming,
        8050,
        forwarded_host="jupyter.example:8888",
        forwarded_proto="https",
        prefix="/dss-containers/proxy/k/8050/",
        reserved_cookie="username-127-0-0-1-8888",
        body_length=None,
    )
    assert "Authorization" not in out and "X-Secret" not in out and "Connection" not in out
    assert out["Cookie"] == "app=d"
    assert out["Host"] == "localhost:8050" and out["Origin"] == "http://localhost:8050"
    assert out["X-Forwarded-Host"] == "jupyter.example:8888"
    assert out["X-Forwarded-Proto"] == "https"
    assert out["X-Forwarded-Prefix"] == "/dss-containers/proxy/k/8050"
    assert out.get_list("X-Forwarded-For") == []
    assert out["Accept"] == "text/html"
    assert upstream_target("/b/dss-containers/proxy/k/80/a%20b/", "token=t&x=1") == "/a%20b/?x=1"
    assert upstream_target("/dss-containers/proxy/k/80/", "token=t") == "/"


def test_what_the_app_may_send_back():
    """Guards the response side: no overwriting the server's cookies, redirects of the app
    to itself stay inside the proxy, other redirects are left alone."""
    assert sets_reserved_cookie("_xsrf=1; Path=/", "username-x")
    assert sets_reserved_cookie("username-x=1", "username-x")
    assert sets_reserved_cookie("jupyterhub-hub-login=1", "username-x")
    assert not sets_reserved_cookie("session=1; Path=/", "username-x")
    prefix = "/user/a/dss-containers/proxy/k/6006/"
    assert rewrite_location("http://localhost:6006/x?y", 6006, prefix) == prefix + "x?y"
    assert rewrite_location("/login", 6006, prefix) == prefix + "login"
    assert rewrite_location("next", 6006, prefix) == "next"
    assert rewrite_location("https://elsewhere.example/", 6006, prefix) == (
        "https://elsewhere.example/"
    )
    assert kept_cookies("_xsrf=1", "username-x") is None


def test_ports_are_checked_before_the_daemon_is_asked():
    """Guards the forwarder's argv: only a decimal port in range gets through."""
    assert parse_port("8050") == 8050
    for bad in ("0", "65536", "080", "+80", "80 ", "", "1e3", "٨٠"):
        assert parse_port(bad) is None
    assert forwarder_command(6006)[-1] == "6006"
    for bad in (0, 65536, True, "80"):
        with pytest.raises(ValueError):
            forwarder_command(bad)  # type: ignore[arg-type]


def test_daemon_stream_frames_are_read_apart():
    """Guards the demultiplexing of a tty-less exec stream (stdout 1, stderr 2)."""
    data = b"".join(
        struct.pack(">BxxxL", stream, len(payload)) + payload
        for stream, payload in [(1, b"HTTP/1.1 200"), (2, b"oops"), (1, b"x" * 70000)]
    )
    left, right = socket.socketpair()
    left.sendall(data[:100])
    left.close()  # a stream cut inside a frame ends the frames, no error
    got = list(frames(right.recv))
    right.close()
    assert got[0] == (1, b"HTTP/1.1 200") and got[1] == (2, b"oops")
    buffer = io.BytesIO(data)  # and a transport that gives at most 7 bytes a read
    assert [p for _, p in frames(lambda n: buffer.read(min(n, 7)))][2] == b"x" * 70000


def test_the_variables_a_kernel_gets():
    """Guards the URLs apps build: under a hub's base URL too, one trailing slash."""
    assert proxy_prefix("/", "k") == "/dss-containers/proxy/k/"
    assert proxy_prefix("/user/alice/", "k") == "/user/alice/dss-containers/proxy/k/"
    env = proxy_env("/user/alice", "k")
    assert env["TENSORBOARD_PROXY_URL"] == "/user/alice/dss-containers/proxy/k/%PORT%/"
    assert env["DASH_REQUESTS_PATHNAME_PREFIX"] == "/user/alice/dss-containers/proxy/k/8050/"
    assert env["DSS_CONTAINERS_KERNEL_ID"] == "k"
