"""Regenerate the development certificates in this folder with ``trustme``.

Run ``python certs/make_certs.py`` (``pip install trustme`` first). It writes:

- ``ca.pem``: the certificate of a throw-away certificate authority;
- ``localhost.pem``: a certificate for ``localhost``, ``127.0.0.1`` and
  ``::1`` signed by that CA, followed by its private key.

For development and teaching only: the CA's private key is not kept, and
the files are public, so never trust ``ca.pem`` anywhere that matters.
"""

from __future__ import annotations

from pathlib import Path

import trustme

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Write ca.pem and localhost.pem beside this script."""
    ca = trustme.CA(organization_name="wsthread development CA")
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    ca.cert_pem.write_to_path(str(HERE / "ca.pem"))
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    (HERE / "localhost.pem").write_bytes(chain + server.private_key_pem.bytes())
    print(f"wrote {HERE / 'ca.pem'} and {HERE / 'localhost.pem'}")


if __name__ == "__main__":
    main()
