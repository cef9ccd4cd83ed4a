"""``<base_url>/dss-containers/proxy/<kernel_id>/<port>/...``: a web app inside a kernel's
container, in the browser, for the kernel's owner only.

Each request (HTTP, or a websocket's handshake) opens one connection to ``port`` inside the
kernel's container through the engine (:mod:`..backends.forward`: ``docker exec`` of a
stdio forwarder, or the API server's pods/portforward), never through a published port.
HTTP goes through tornado's own HTTP/1.1 client machinery over that connection, its
response relayed chunk by chunk as it comes (streams and server-sent events work, big
downloads are not buffered); a websocket is tunnelled byte for byte once the app in the
container agreed to the upgrade, so any subprotocol and extension passes.

Refusals: a kernel that does not exist, is not a container kernel or is another user's
answers the same 404 with the same text (no oracle); nobody logged in gets the server's
login redirect (GET) or 403. Cross-site requests are refused: a websocket or a write must
come from the server's own origin (or carry the Jupyter token / XSRF token). What reaches
the app leaves the Jupyter credentials behind: no ``Authorization`` header, no ``token``
query argument, none of the server's or the hub's cookies; the app sees itself addressed
as ``localhost:<port>`` (Host and Origin), so its own same-origin checks (Bokeh, Streamlit,
Jupyter, tornado) pass, and ``X-Forwarded-*`` say where the browser is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import httputil, iostream, web
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters

from ..backends.base import BackendError
from ..backends.forward import ForwardUnsupported, PortConnection, open_port
from ..config import ConfigError, load_config
from ..proxyenv import PROXY_PREFIX
from .identity import request_identity
from .kernels import OwnedKernelManager, does_not_exist

#: the route, relative to the base URL (the path is read raw from the request)
PROXY_PATTERN = rf"{PROXY_PREFIX}/(?P<kernel_id>[^/]+)/(?P<port>[^/]+)(?P<path>/.*)?"
_RAW_PATH = re.compile(rf"/{PROXY_PREFIX}/[^/]+/[^/]+(?P<path>/.*)?$")
#: headers that belong to one hop, never relayed (RFC 9110 7.6.1)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: request headers the app never sees (the Jupyter credentials, and what is replaced)
_DROPPED_REQUEST = HOP_BY_HOP | {"authorization", "host", "origin", "cookie", "content-length"}
#: cookies of the server and of JupyterHub, never sent to the app nor set by it
_RESERVED_COOKIE = re.compile(r"^(_xsrf|username-.*|jupyterhub-.*)$")
#: most a response head may be, and a response body (streamed, never buffered whole)
MAX_HEAD = 64 * 1024
MAX_BODY = 1 << 40
_CHUNK = 64 * 1024


def upstream_target(raw_path: str, query: str) -> str:
    """The request target the app gets: the path after ``<kernel_id>/<port>`` (``/`` when
    empty), the query without the Jupyter ``token``."""
    match = _RAW_PATH.search(raw_path)
    path = (match.group("path") if match else None) or "/"
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"]
    return path + ("?" + urlencode(pairs) if pairs else "")


def parse_port(text: str) -> int | None:
    """A TCP port from the URL (decimal 1-65535, no sign, no leading zeros), else None."""
    if not re.fullmatch(r"[1-9][0-9]{0,4}", text or ""):
        return None
    port = int(text)
    return port if port < 65536 else None


def kept_cookies(header: str | None, reserved: str) -> str | None:
    """The Cookie header without the server's and the hub's cookies (None when empty)."""
    if not header:
        return None
    kept = []
    for part in header.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and name != reserved and not _RESERVED_COOKIE.match(name):
            kept.append(part.strip())
    return "; ".join(kept) or None


def sets_reserved_cookie(value: str, reserved: str) -> bool:
    """Whether a Set-Cookie of the app would overwrite one of the server's cookies."""
    try:
        cookie = SimpleCookie()
        cookie.load(value)
        names = list(cookie)
    except CookieError:
        return True  # unreadable: not relayed
    name = value.split("=", 1)[0].strip()
    return any(n == reserved or _RESERVED_COOKIE.match(n) for n in [*names, name])


def upstream_headers(
    incoming: httputil.HTTPHeaders,
    port: int,
    *,
    forwarded_host: str,
    forwarded_proto: str,
    prefix: str,
    reserved_cookie: str,
    body_length: int | None,
) -> httputil.HTTPHeaders:
    """What the app gets: the browser's headers less credentials and hop-by-hop ones, the
    app addressed as ``localhost:<port>``, and where the browser really is."""
    out = httputil.HTTPHeaders()
    listed = {v.strip().lower() for v in incoming.get("Connection", "").split(",")}
    for name, value in incoming.get_all():
        lower = name.lower()
        if lower in _DROPPED_REQUEST or lower in listed or lower.startswith("x-forwarded-"):
            continue
        out.add(name, value)
    out["Host"] = f"localhost:{port}"
    if "Origin" in incoming:
        out["Origin"] = f"http://localhost:{port}"  # checked same-origin before (see handler)
    cookies = kept_cookies(incoming.get("Cookie"), reserved_cookie)
    if cookies:
        out["Cookie"] = cookies
    if body_length is not None:
        out["Content-Length"] = str(body_length)
    out["X-Forwarded-Host"] = forwarded_host
    out["X-Forwarded-Proto"] = forwarded_proto
    out["X-Forwarded-Prefix"] = prefix.rstrip("/")
    return out


def rewrite_location(location: str, port: int, prefix: str) -> str:
    """A redirect of the app to itself, made to go through the proxy again."""
    parts = urlsplit(location)
    if parts.scheme in ("http", "https") and parts.netloc.lower() in (
        f"localhost:{port}",
        f"127.0.0.1:{port}",
    ):
        rest = location.split(parts.netloc, 1)[1] or "/"
        return prefix.rstrip("/") + rest
    if location.startswith("/") and not location.startswith("//"):
        return prefix.rstrip("/") + location
    return location


class _Relay(httputil.HTTPMessageDelegate):
    """The app's response, relayed to the browser as it comes."""

    def __init__(self, handler: ProxyHandler, port: int, prefix: str):
        self.handler, self.port, self.prefix = handler, port, prefix
        self.started = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.started = True
        handler = self.handler
        handler.set_status(start_line.code, start_line.reason or "Unknown")
        handler.clear_header("Content-Type")
        listed = {v.strip().lower() for v in headers.get("Connection", "").split(",")}
        for name, value in headers.get_all():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in listed:
                continue
            if lower == "location":
                value = rewrite_location(value, self.port, self.prefix)
            if lower == "set-cookie" and sets_reserved_cookie(value, handler.reserved_cookie):
                continue
            if lower in ("content-type", "content-length", "location"):
                handler.set_header(name, value)
            else:
                handler.add_header(name, value)

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        self.handler.write(chunk)
        await self.handler.flush()


class ProxyHandler(JupyterHandler):
    """HTTP and websockets into a port of the caller's own container kernel."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    _upstream: iostream.IOStream | None = None

    @property
    def reserved_cookie(self) -> str:
        """The server's login cookie name (the identity provider's)."""
        try:
            return self.identity_provider.get_cookie_name(self)
        except Exception:
            return "username-"

    def check_xsrf_cookie(self) -> None:
        """The server's XSRF rules, or a same-origin request (apps post without Jupyter's
        ``_xsrf``: Dash callbacks, Streamlit uploads); a cross-site write stays refused."""
        try:
            super().check_xsrf_cookie()
        except web.HTTPError:
            if not self._same_origin():
                raise

    def _same_origin(self) -> bool:
        host = self.request.headers.get("Host")
        origin = self.request.headers.get("Origin") or self.request.headers.get("Referer")
        return bool(host and origin and urlsplit(origin).netloc.lower() == host.lower())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A short JSON reason, the same for a missing kernel and another user's."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.clear_header("Content-Type")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": self._reason}))

    def on_connection_close(self) -> None:
        if self._upstream is not None:
            self._upstream.close()

    # ----------------------------------------------------------------- the kernel

    async def _workload(self, kernel_id: str) -> tuple[Any, str]:
        """(backend, workload id) of the caller's container kernel; 404 for anything else."""
        from ..provisioner import ContainerProvisioner
        from .handlers.kernels import backend_of

        extension = self.settings.get("dss_containers")
        try:
            config_file = await asyncio.to_thread(
                load_config, getattr(extension, "config_file", None)
            )
        except ConfigError as exc:
            raise web.HTTPError(503, "%s", str(exc)) from None
        identity = request_identity(self, config_file)
        missing = web.HTTPError(404, "%s", does_not_exist(kernel_id))
        manager_of_all = self.kernel_manager
        if isinstance(manager_of_all, OwnedKernelManager) and not manager_of_all.is_visible(
            kernel_id
        ):
            raise missing
        try:
            manager = manager_of_all.get_kernel(kernel_id)
        except KeyError:
            raise missing from None
        provisioner = getattr(manager, "provisioner", None)
        if (
            not isinstance(provisioner, ContainerProvisioner)
            or provisioner.owner != identity.username
        ):
            raise missing
        backend = backend_of(provisioner)
        if backend is None or not provisioner.workload_id:
            raise web.HTTPError(503, "the kernel has no container right now (starting?)")
        return backend, provisioner.workload_id

    def _prefix(self, kernel_id: str, port: int) -> str:
        return url_path_join(self.base_url, PROXY_PREFIX, kernel_id, str(port)) + "/"

    async def _connect(self, kernel_id: str, port_text: str) -> tuple[PortConnection, int]:
        port = parse_port(port_text)
        backend, workload_id = await self._workload(kernel_id)  # 404 before anything else
        if port is None:
            raise web.HTTPError(400, "not a TCP port (1-65535): %r", port_text[:20])
        try:
            return await open_port(backend, workload_id, port), port
        except ForwardUnsupported as exc:
            raise web.HTTPError(501, "%s", str(exc)) from None
        except BackendError as exc:
            raise web.HTTPError(502, "cannot reach the kernel's container: %s", str(exc)) from None

    # ----------------------------------------------------------------- routes

    @web.authenticated
    async def get(self, kernel_id: str, port: str, path: str | None = None) -> None:
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._tunnel_websocket(kernel_id, port)
        else:
            await self._proxy(kernel_id, port, path)

    @web.authenticated
    async def head(self, kernel_id: str, port: str, path: str | None = None) -> None:
        await self._proxy(kernel_id, port, path)

    @web.authenticated
    async def post(self, kernel_id: str, port: str, path: str | None = None) -> None:
        await self._proxy(kernel_id, port, path)

    @web.authenticated
    async def put(self, kernel_id: str, port: str, path: str | None = None) -> None:
        await self._proxy(kernel_id, port, path)

    @web.authenticated
    async def delete(self, kernel_id: str, port: str, path: str | None = None) -> None:
        await self._proxy(kernel_id, port, path)

    @web.authenticated
    async def patch(self, kernel_id: str, port: str, path: str | None = None) -> None:
        await self._proxy(kernel_id, port, path)

    @web.authenticated
    async def options(self, kernel_id: str, port: str, path: str | None = None) -> None:
        await self._proxy(kernel_id, port, path)

    # ----------------------------------------------------------------- HTTP

    async def _proxy(self, kernel_id: str, port_text: str, path: str | None) -> None:
        if path is None:  # the app's relative links need the folder's slash
            await self._workload(kernel_id)  # 404 first: no redirect tells what exists
            query = self.request.query
            self.redirect(self.request.path + "/" + ("?" + query if query else ""))
            return
        connection, port = await self._connect(kernel_id, port_text)
        prefix = self._prefix(kernel_id, port)
        body = self.request.body
        method = self.request.method or "GET"
        with_body = bool(body) or method in ("POST", "PUT", "PATCH")
        headers = upstream_headers(
            self.request.headers,
            port,
            forwarded_host=self.request.host,
            forwarded_proto=self.request.protocol,
            prefix=prefix,
            reserved_cookie=self.reserved_cookie,
            body_length=len(body) if with_body else None,
        )
        stream = iostream.IOStream(connection.local)
        self._upstream = stream
        params = HTTP1ConnectionParameters(
            no_keep_alive=True,
            decompress=False,
            max_header_size=MAX_HEAD,
            max_body_size=MAX_BODY,
            chunk_size=_CHUNK,
        )
        upstream = HTTP1Connection(stream, True, params)
        relay = _Relay(self, port, prefix)
        target = upstream_target(self.request.path, self.request.query)
        try:
            await upstream.write_headers(
                httputil.RequestStartLine(method, target, "HTTP/1.1"), headers
            )
            if with_body and body:
                await upstream.write(body)
            upstream.finish()
            await upstream.read_response(relay)
        except (iostream.StreamClosedError, httputil.HTTPInputError) as exc:
            if not relay.started:
                raise self._no_answer(connection, port, exc) from None
            return  # the app hung up half way: the browser sees a cut response
        finally:
            stream.close()
            self._upstream = None
        if not relay.started:
            raise self._no_answer(connection, port, None)
        if not self._finished:
            self.finish()

    def _no_answer(
        self, connection: PortConnection, port: int, exc: Exception | None
    ) -> web.HTTPError:
        why = connection.errors or (str(exc) if exc else "") or "it closed the connection"
        return web.HTTPError(
            502, "nothing answered on port %d in the kernel's container: %s", port, why
        )

    # ----------------------------------------------------------------- websockets

    async def _tunnel_websocket(self, kernel_id: str, port_text: str) -> None:
        """Pass the handshake to the app; once it answered 101, copy bytes both ways."""
        origin = self.request.headers.get("Origin")
        if origin and not self._same_origin() and not self.check_origin():
            raise web.HTTPError(403, "cross-origin websocket refused")
        connection, port = await self._connect(kernel_id, port_text)
        prefix = self._prefix(kernel_id, port)
        headers = upstream_headers(
            self.request.headers,
            port,
            forwarded_host=self.request.host,
            forwarded_proto=self.request.protocol,
            prefix=prefix,
            reserved_cookie=self.reserved_cookie,
            body_length=None,
        )
        headers["Connection"] = "Upgrade"
        headers["Upgrade"] = self.request.headers.get("Upgrade", "websocket")
        target = upstream_target(self.request.path, self.request.query)
        head = f"GET {target} HTTP/1.1\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.get_all()) + "\r\n"
        upstream = iostream.IOStream(connection.local)
        self._upstream = upstream
        try:
            await upstream.write(head.encode("latin-1"))
            answer = await upstream.read_until_regex(rb"\r?\n\r?\n", max_bytes=MAX_HEAD)
        except (iostream.StreamClosedError, iostream.UnsatisfiableReadError) as exc:
            upstream.close()
            raise self._no_answer(connection, port, exc) from None
        status = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        if " 101 " not in status + " ":
            upstream.close()
            raise web.HTTPError(502, "the app refused the websocket: %s", status[:200])
        self._upstream = None
        browser = self.detach()
        try:
            await browser.write(answer)
        except iostream.StreamClosedError:
            upstream.close()
            return
        await asyncio.gather(_pump(browser, upstream), _pump(upstream, browser))


async def _pump(source: iostream.IOStream, sink: iostream.IOStream) -> None:
    """Copy ``source`` into ``sink`` until either closes, then close both."""
    try:
        while True:
            data = await source.read_bytes(_CHUNK, partial=True)
            await sink.write(data)
    except iostream.StreamClosedError:
        pass
    finally:
        for stream in (source, sink):
            with contextlib.suppress(Exception):
                stream.close()


#: (pattern relative to the base URL, handler), registered by the extension
PROXY_ROUTES: list[tuple[str, type]] = [(PROXY_PATTERN, ProxyHandler)]
