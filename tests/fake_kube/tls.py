"""HTTPS for the fake API server: a self-signed cluster CA made per cluster (as kubeadm
makes ``/etc/kubernetes/pki/ca.crt``) and a serving certificate it signs for 127.0.0.1
and ``kubernetes.default.svc``. The CA's certificate is what the kubelet mounts as the
service account's ``ca.crt``; clients verify the server with it (never ``insecure``)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class ClusterCA:
    """The cluster's CA and the API server's certificate, as PEM files in a private folder."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("fake-kube-ca"))
            .issuer_name(_name("fake-kube-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        names += [x509.DNSName(n) for n in SERVER_NAMES]
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("kube-apiserver"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256())
        )
        self.folder = tempfile.mkdtemp(prefix="fake-kube-pki-")
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM)
        self.ca_file = self._write("ca.crt", self.ca_pem, 0o644)
        self.cert_file = self._write("apiserver.crt", cert.public_bytes(serialization.Encoding.PEM))
        self.key_file = self._write("apiserver.key", _pem_key(key), 0o600)

    def _write(self, name: str, data: bytes, mode: int = 0o644) -> str:
        path = os.path.join(self.folder, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            f.write(data)
        return path

    def server_context(self) -> ssl.SSLContext:
        """The API server's TLS context (TLS 1.2 and up, as kube-apiserver's default)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context
