"""A TCP connection to a port inside a container, through the daemon: no port is published.

Each connection is one ``docker exec`` of a tiny Python forwarder (:data:`FORWARDER`) that
connects to ``127.0.0.1:<port>`` (else ``[::1]``) in the container's own network namespace
and copies its stdin to the socket and the socket to its stdout. The exec's stream is the daemon's
hijacked connection (``exec_start(socket=True)``), tty-less so bytes pass unchanged; what
the daemon sends back is multiplexed (8-byte frame headers naming stdout or stderr), which
:func:`frames` reads apart. Two threads per connection copy between that stream and one end
of a local socket pair; the caller gets the other end, a plain socket an event loop can
use. So anything that reaches the daemon (a local socket, TCP+TLS, SSH) reaches the port,
and only through the daemon's own access control.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ...config import DockerSettings
from ..base import BackendError
from . import client as dc

#: the forwarder run inside the container: argv[1] is the port; a refused connection is
#: reported on stderr (prefixed, so the server can quote it) with nothing on stdout
FORWARDER = r"""
import os, socket, sys, threading, time
errors = []
for host in ("127.0.0.1", "::1"):
    try:
        s = socket.create_connection((host, int(sys.argv[1])), timeout=10)
        break
    except OSError as e:
        errors.append(e.strerror or str(e))
else:
    sys.stderr.write("dss-forward: %s\n" % errors[0]); sys.exit(3)
s.settimeout(None)
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            break
        s.sendall(d)
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    time.sleep(10)  # the caller is gone: an app that keeps its end open does not keep us
    os._exit(0)
threading.Thread(target=up, daemon=True).start()
out = sys.stdout.buffer
while True:
    d = s.recv(65536)
    if not d:
        break
    out.write(d); out.flush()
"""
#: the interpreters tried in the container, first found first
FORWARDER_COMMAND = (
    "sh",
    "-c",
    'for p in python3 python; do command -v "$p" >/dev/null && exec "$p" -c "$0" "$1"; done; '
    'echo "dss-forward: no python in the container" >&2; exit 127',
    FORWARDER,
)
STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")
#: bytes of the forwarder's stderr kept for the error message
_STDERR_KEPT = 2000


def forwarder_command(port: int) -> list[str]:
    """The exec's argv for ``port`` (1-65535; anything else is refused before any call)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"not a TCP port: {port!r}")
    return [*FORWARDER_COMMAND, str(port)]


def frames(read: Callable[[int], bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) pairs of the daemon's multiplexed stream until it ends."""
    while True:
        header = _read_exactly(read, _HEADER.size)
        if len(header) < _HEADER.size:
            return
        stream, size = _HEADER.unpack(header)
        payload = _read_exactly(read, size)
        if payload:
            yield stream, payload
        if len(payload) < size:
            return


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        chunk = read(min(left, 65536))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class _ExecStream:
    """The hijacked exec connection, whatever the transport gave (socket, SocketIO, TLS
    socket, paramiko channel), as read / write / close-write / close."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.sock = getattr(raw, "_sock", raw)

    def read(self, size: int) -> bytes:
        return self.sock.recv(size)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close_write(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            if hasattr(self.sock, "shutdown_write"):  # paramiko (ssh://)
                self.sock.shutdown_write()
            else:
                self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for thing in (self.sock, self.raw):
            with contextlib.suppress(Exception):
                thing.close()


class Forward:
    """One forwarded connection: :attr:`local` is the caller's socket; what the forwarder
    wrote on stderr (why it could not connect) is in :attr:`errors` once it ended."""

    def __init__(self, stream: _ExecStream):
        self.local, self._inner = socket.socketpair()
        self._stream = stream
        self._errors = bytearray()
        self._done = 0
        self._lock = threading.Lock()
        for target in (self._down, self._up):
            threading.Thread(target=target, name="dss-forward", daemon=True).start()

    @property
    def errors(self) -> str:
        text = bytes(self._errors).decode("utf-8", "replace")
        return " ".join(line.removeprefix("dss-forward: ") for line in text.splitlines())

    def _down(self) -> None:
        """Daemon -> caller: stdout frames to the socket pair, stderr kept."""
        try:
            for stream, payload in frames(self._stream.read):
                if stream == STDERR:
                    self._errors += payload[: max(0, _STDERR_KEPT - len(self._errors))]
                else:
                    self._inner.sendall(payload)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self._inner.shutdown(socket.SHUT_WR)
            self._finish()

    def _up(self) -> None:
        """Caller -> daemon: raw bytes to the exec's stdin; its end closes stdin."""
        try:
            while True:
                data = self._inner.recv(65536)
                if not data:
                    break
                self._stream.write(data)
        except OSError:
            pass
        finally:
            self._stream.close_write()
            self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._done += 1
            last = self._done == 2
        if last:
            self._stream.close()
            self._inner.close()


def _open_sync(settings: DockerSettings, container: str, port: int) -> Forward:
    api = dc.docker_client(settings).api
    exec_id = api.exec_create(
        container, forwarder_command(port), stdin=True, stdout=True, stderr=True, tty=False
    )["Id"]
    raw = api.exec_start(exec_id, tty=False, socket=True)
    return Forward(_ExecStream(raw))


async def open_port(settings: DockerSettings, container: str, port: int) -> Forward:
    """A connection to ``port`` inside ``container`` (the SDK calls run in a thread)."""
    command = forwarder_command(port)  # a bad port fails here, before the daemon is asked
    del command
    try:
        return await dc.call(settings, _open_sync, settings, container, port)
    except BackendError as exc:
        if "is not running" in str(exc):
            raise BackendError("the kernel's container is not running") from None
        raise
