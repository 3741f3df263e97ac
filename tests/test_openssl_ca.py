"""The openssl stand-in for trustme (tests/openssl_ca.py), checked wherever the suite runs.

Where trustme is installed the TLS fixtures use it, so without these tests
the stand-in would only ever run on the free-threaded build: here it serves
wss with wsthread on both ends, the host name and the CA both checked.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import openssl_ca
import wsthread
from conftest import ServerFactory


@pytest.fixture(scope="module")
def openssl_authority() -> openssl_ca.CA:
    """One stand-in CA for the module (each costs an openssl run)."""
    return openssl_ca.CA()


def contexts(authority: openssl_ca.CA, *names: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a leaf for ``names``, and a default client context trusting the CA."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert(*names).configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_wss_with_the_stand_in_certificates(
    make_server: ServerFactory, openssl_authority: openssl_ca.CA, host: str
) -> None:
    """A leaf for a DNS name and an IP address passes Python's default (strict) verification."""
    server_context, client_context = contexts(openssl_authority, "localhost", "127.0.0.1")
    server = make_server(ssl=server_context)
    with wsthread.connect(f"wss://{host}:{server.port}/", ssl=client_context) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=5) == "over tls"


def test_a_name_not_in_the_certificate_is_refused(
    make_server: ServerFactory, openssl_authority: openssl_ca.CA
) -> None:
    """The subjectAltNames are the names given, no more: 127.0.0.1 fails a localhost leaf."""
    server_context, client_context = contexts(openssl_authority, "localhost")
    server = make_server(ssl=server_context)
    with pytest.raises(ssl.SSLCertVerificationError):
        wsthread.connect(f"wss://127.0.0.1:{server.port}/", ssl=client_context, open_timeout=5)


def test_another_ca_is_not_trusted(
    make_server: ServerFactory, openssl_authority: openssl_ca.CA
) -> None:
    """A client trusting one stand-in CA refuses a leaf of another."""
    server_context, _ = contexts(openssl_ca.CA(), "localhost")
    _, client_context = contexts(openssl_authority, "localhost")
    server = make_server(ssl=server_context)
    with pytest.raises(ssl.SSLCertVerificationError):
        wsthread.connect(f"wss://localhost:{server.port}/", ssl=client_context, open_timeout=5)


def test_key_and_chain_file_loads(openssl_authority: openssl_ca.CA, tmp_path: Path) -> None:
    """``private_key_and_cert_chain_pem`` is one file ``load_cert_chain`` accepts (as trustme's)."""
    leaf = openssl_authority.issue_cert("localhost")
    path = tmp_path / "leaf.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    text = path.read_text()
    assert "PRIVATE KEY" in text and text.count("BEGIN CERTIFICATE") == 1
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(path))
