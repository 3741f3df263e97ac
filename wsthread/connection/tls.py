"""TLS contexts with sensible defaults, for ``wss://`` servers and clients."""

from __future__ import annotations

import ssl
from typing import Optional

__all__ = ["server_context", "client_context"]


def server_context(certfile: str, keyfile: Optional[str] = None) -> ssl.SSLContext:
    """A server-side TLS context: TLS 1.2 or newer, the given certificate chain and key.

    Args:
        certfile: PEM file with the certificate chain (and the key, if
            ``keyfile`` is not given).
        keyfile: PEM file with the private key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def client_context(cafile: Optional[str] = None, *, insecure: bool = False) -> ssl.SSLContext:
    """A client-side TLS context: TLS 1.2 or newer, certificates and host names checked.

    Args:
        cafile: PEM file of CA certificates to trust instead of the system's.
        insecure: skip certificate and host name checks (development only).
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
