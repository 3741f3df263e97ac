"""A throw-away test CA made with the ``openssl`` command: the part of trustme's API the tests use.

trustme needs ``cryptography``, which cannot be installed on every Python
the suite runs on (CPython 3.13t, free-threaded, has no wheel of it and its
build dependency ``cffi`` refuses that build). ``tests/conftest.py`` uses
this module in trustme's place when ``import trustme`` fails, so the TLS
tests run there too instead of being skipped. Where trustme is installed
(the main suite) it is used, and ``tests/test_openssl_ca.py`` checks this
stand-in over real wss connections.

The certificates are ECDSA P-256 (quick to make), valid for a day, with the
extensions that Python's default client context (``VERIFY_X509_STRICT``)
requires: a CA with critical basic constraints and key usage, leaves with
subject and authority key identifiers and their names as subjectAltNames.
Runs on the calling thread; each certificate costs two ``openssl`` runs.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import List, Union

__all__ = ["Blob", "CA", "LeafCert"]

_CA_EXTENSIONS = """\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = {names}
"""

_serial_lock = threading.Lock()
_serial = int.from_bytes(os.urandom(7), "big")


def _next_serial() -> int:
    """A serial number not used before by this process (the CA issues many leaves)."""
    global _serial
    with _serial_lock:
        _serial += 1
        return _serial


def _openssl(*args: str, cwd: str) -> None:
    """Run ``openssl ARGS`` in ``cwd``; a failure raises with its output."""
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _alt_name(name: str) -> str:
    """``DNS:name`` or ``IP:address``, as openssl's subjectAltName wants it."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


class Blob:
    """PEM data held in memory, as ``trustme.Blob``: ``bytes()`` and ``write_to_path()``."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def bytes(self) -> bytes:
        """The PEM bytes."""
        return self._data

    def write_to_path(self, path: Union[str, os.PathLike[str]], append: bool = False) -> None:
        """Write the PEM bytes to ``path`` (added at its end with ``append``)."""
        with open(path, "ab" if append else "wb") as file:
            file.write(self._data)


class LeafCert:
    """A key and certificate issued by a :class:`CA`, as ``trustme.LeafCert``."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        self.private_key_pem = Blob(key_pem)
        self.cert_chain_pems: List[Blob] = [Blob(cert_pem)]
        self.private_key_and_cert_chain_pem = Blob(key_pem + cert_pem)

    def configure_cert(self, context: ssl.SSLContext) -> None:
        """Make ``context`` present this certificate and key."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "leaf.pem"
            self.private_key_and_cert_chain_pem.write_to_path(path)
            context.load_cert_chain(str(path))


class CA:
    """A certificate authority made for the test and thrown away, as ``trustme.CA``."""

    def __init__(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "ca.cnf").write_text(_CA_EXTENSIONS)
            _openssl(
                "req", "-x509", "-new", "-nodes", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/O=wsthread tests/CN=wsthread test CA",
                "-config", "ca.cnf", "-extensions", "ca",
                cwd=directory,
            )  # fmt: skip
            self._key = Path(directory, "ca.key").read_bytes()
            self.cert_pem = Blob(Path(directory, "ca.pem").read_bytes())

    def issue_cert(self, *names: str) -> LeafCert:
        """A certificate for ``names`` (host names or IP addresses), signed by this CA."""
        if not names:
            raise ValueError("a certificate needs at least one name")
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "ca.key").write_bytes(self._key)
            self.cert_pem.write_to_path(Path(directory, "ca.pem"))
            Path(directory, "leaf.cnf").write_text(
                _LEAF_EXTENSIONS.format(names=", ".join(_alt_name(name) for name in names))
            )
            _openssl(
                "req", "-new", "-nodes", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", "leaf.key", "-out", "leaf.csr",
                "-subj", f"/O=wsthread tests/CN={names[0]}",
                cwd=directory,
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(_next_serial()), "-days", "1",
                "-extfile", "leaf.cnf", "-out", "leaf.pem",
                cwd=directory,
            )  # fmt: skip
            return LeafCert(
                Path(directory, "leaf.key").read_bytes(), Path(directory, "leaf.pem").read_bytes()
            )

    def configure_trust(self, context: ssl.SSLContext) -> None:
        """Make ``context`` trust certificates signed by this CA."""
        context.load_verify_locations(cadata=self.cert_pem.bytes().decode("ascii"))
