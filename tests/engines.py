"""Second engines for tests, all on loopback: Podman's Docker API, and the local dockerd
reached as a *remote* daemon over TLS (``tcp://127.0.0.1``) and over SSH (``ssh://``).

The running dockerd is shared with other test processes, so it is never restarted with
``--tlsverify``: a small TLS terminator (asyncio, ``ssl.CERT_REQUIRED``) stands in front of
its socket instead. A production site sets ``--tlsverify`` on dockerd itself; the client
side (certificates from the config, verification of the daemon) is the same.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DOCKER_SOCKET = "/var/run/docker.sock"


# --------------------------------------------------------------------------- certificates


@dataclass
class Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(folder: Path, name: str = "dss-test") -> Certs:
    """A fresh CA with a server certificate (IP 127.0.0.1) and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def certificate(subject: str, key, issuer_name, issuer_key, ca: bool, extra=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca_cert = certificate(f"{name} CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = certificate(
        "127.0.0.1",
        server_key,
        ca_name,
        ca_key,
        ca=False,
        extra=(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        ),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = certificate(
        f"{name} client",
        client_key,
        ca_name,
        ca_key,
        ca=False,
        extra=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),),
    )
    certs = Certs(
        ca=folder / "ca.pem",
        server_cert=folder / "server-cert.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "cert.pem",
        client_key=folder / "key.pem",
    )
    certs.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    certs.server_key.write_bytes(key_pem(server_key))
    certs.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    certs.client_key.write_bytes(key_pem(client_key))
    for path in (certs.server_key, certs.client_key):
        path.chmod(0o600)
    return certs


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentListener:
    """A loopback port that never completes a TCP handshake, like a firewalled daemon: its
    accept queue is full (backlog 0, connections never accepted), so new SYNs are dropped."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(0)
        self.port = self._server.getsockname()[1]
        self._held = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", self.port))
            self._held.append(s)
        time.sleep(0.1)

    def close(self) -> None:
        for s in [*self._held, self._server]:
            s.close()


# --------------------------------------------------------------------------- TLS endpoint


class TLSDockerEndpoint:
    """``tcp://127.0.0.1:<port>`` with mutual TLS, forwarding bytes to the local socket.

    Blocking sockets in threads, so that a refused client certificate gets its TLS alert
    before the connection closes, as from dockerd's own TLS listener.
    """

    def __init__(self, certs: Certs, target: str = DOCKER_SOCKET):
        self.certs = certs
        self.target = target
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs.ca))
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(certs.server_cert), str(certs.server_key))
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> TLSDockerEndpoint:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()  # the alert (unknown CA, certificate required) went out
            return
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.connect(self.target)
        except OSError:
            tls.close()
            return
        done = threading.Event()

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(1 << 16):
                    dst.sendall(data)
            except OSError:
                pass
            done.set()

        threading.Thread(target=pipe, args=(upstream, tls), daemon=True).start()
        pipe(tls, upstream)
        done.wait(1)
        for s in (tls, upstream):
            with contextlib.suppress(OSError):
                s.close()

    def stop(self) -> None:
        self._closed = True
        self._listener.close()


# --------------------------------------------------------------------------- SSH endpoint


class SSHDaemon:
    """A private sshd on 127.0.0.1 that accepts one key the tests made, for root."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.home = folder / "home"

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def start(self) -> SSHDaemon:
        self.folder.mkdir(parents=True, exist_ok=True)
        host_key = self.folder / "host_ed25519"
        user_key = self.folder / "id_ed25519"
        for key in (host_key, user_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        authorized = self.folder / "authorized_keys"
        shutil.copy(f"{user_key}.pub", authorized)
        # the client side: what the Jupyter server user's ~/.ssh holds on a real site
        ssh_dir = self.home / ".ssh"
        ssh_dir.mkdir(parents=True, mode=0o700)
        host_pub = Path(f"{host_key}.pub").read_text().split()
        (ssh_dir / "known_hosts").write_text(
            f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n"
        )
        (ssh_dir / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {user_key}\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        config = self.folder / "sshd_config"
        config.write_text("")
        self.process = subprocess.Popen(
            [
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                str(config),
                "-p",
                str(self.port),
                "-h",
                str(host_key),
                "-o",
                "ListenAddress=127.0.0.1",
                "-o",
                f"AuthorizedKeysFile={authorized}",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "PermitRootLogin=prohibit-password",
                "-o",
                "StrictModes=no",
                "-o",
                "UsePAM=no",
                "-o",
                f"PidFile={self.folder / 'sshd.pid'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "sshd.log", "wb"),  # noqa: SIM115
        )
        _wait_for_port(self.port, self.process, self.folder / "sshd.log")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


# --------------------------------------------------------------------------- Podman


class PodmanService:
    """``podman system service`` on a Unix socket of ours (rootful, the default store)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.socket = folder / "podman.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> PodmanService:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "containers.conf"
        # Podman's default ulimits exceed what this (nested) host grants: name ones it does
        conf.write_text(
            '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
        )
        env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", self.url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "podman.log", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "podman.log").read_text()[-2000:]
                raise RuntimeError(f"podman system service did not start: {log}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after 10 s")
