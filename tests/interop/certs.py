"""Throw-away PKI for TLS interop tests: one CA, a loopback server certificate, a client certificate.

Everything is generated fresh (EC P-256, two days' validity) by the fleet tool's own
tools/provision/pki.py, so the tests exercise the certificates deskphone-provision makes and no
key material is kept in the repository. The server certificate names 127.0.0.1, ::1 and localhost as
subjectAltNames, which is what a verifying client (Python's ssl, the deskphone's TLS transport)
checks when it connects to the Kamailio fixture on loopback.

API::

    pki = make_pki(directory)          # -> TestPKI with PEM file paths
    pki.ca_cert, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key
    pki.client_ssl_context()           # ssl.SSLContext trusting only the test CA
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from tools.provision import pki as fleet_pki

SERVER_HOSTS = ["localhost", "127.0.0.1", "::1"]  # subjectAltNames; the CN is the first
VALID_DAYS = 2


@dataclass(frozen=True)
class TestPKI:
    """Paths of the PEM files written by `make_pki`."""

    __test__ = False  # not a pytest test class despite the name

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against the test CA only."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert))
        return ctx


def make_pki(directory: Path, *, client_user: str = "1001") -> TestPKI:
    """Create a CA, a server cert for loopback and a client cert (CN = client_user) in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = fleet_pki.make_ca("deskphone test CA", days=VALID_DAYS)
    server_key, server_cert = fleet_pki.server_cert(ca_key, ca_cert, SERVER_HOSTS, VALID_DAYS)
    client_key = fleet_pki.new_key()
    client_cert = fleet_pki.device_cert(
        ca_key, ca_cert, client_user, client_key.public_key(), VALID_DAYS
    )
    pki = TestPKI(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    for path, cert in ((pki.ca_cert, ca_cert), (pki.server_cert, server_cert),
                       (pki.client_cert, client_cert)):  # fmt: skip
        fleet_pki.atomic_write(path, fleet_pki.cert_pem(cert))
    for path, key in ((pki.ca_key, ca_key), (pki.server_key, server_key),
                      (pki.client_key, client_key)):  # fmt: skip
        fleet_pki.atomic_write(path, fleet_pki.key_pem(key), mode=0o600)
    return pki
