"""Proxies for :func:`wsthread.connect`: HTTP CONNECT and SOCKS5 tunnels, on the connecting thread.

The client opens a TCP connection to the proxy, asks it for a tunnel to the
WebSocket server, and then runs TLS (for ``wss://``) and the WebSocket
handshake through that tunnel as if it were a direct connection::

    client ──TCP──> proxy ──TCP──> server
           CONNECT host:port HTTP/1.1           (http://)
           05 01 00 03 <host> <port>             (socks5h://)

Supported proxy URLs:

- ``http://[user:password@]host[:port]``: ``CONNECT`` (RFC 9110 §9.3.6),
  with Basic ``Proxy-Authorization`` when credentials are given. The
  tunnel carries ``ws://`` and ``wss://`` alike (TLS runs end to end
  inside it: the proxy sees only the host and port).
- ``socks5://[user:password@]host[:port]`` (RFC 1928, RFC 1929
  username/password): the client resolves the server's name itself.
- ``socks5h://...``: the proxy resolves the name (nothing is looked up
  locally: the only choice where local DNS is filtered).

By default, :func:`wsthread.connect` finds the proxy in the environment as
``curl`` and ``requests`` do, through :func:`urllib.request.getproxies`
and :func:`urllib.request.proxy_bypass`: ``wss://`` uses ``HTTPS_PROXY``,
``ws://`` uses ``HTTP_PROXY``, either falls back to ``ALL_PROXY``, and a
host matching ``NO_PROXY`` is reached directly. Lowercase names win over
uppercase ones. ``proxy=None`` ignores the environment; an explicit proxy
URL is always used.

Every failure of the proxy raises :class:`ProxyError` with the proxy's
answer: the HTTP status of a refused ``CONNECT`` (407 for refused
credentials, 502/503/504 when the server is unreachable), or the SOCKS5
reply code, translated to the nearest HTTP status.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from typing import Dict, Optional, Union

from ..exceptions import ProxyError
from ..runtime.deadline import Deadline

__all__ = [
    "Proxy",
    "ProxyOption",
    "parse_proxy",
    "proxy_from_environment",
    "open_tunnel",
    "connect_socket",
]

ProxyOption = Union[str, bool, None]
"""``connect(proxy=...)``: ``True`` (from the environment), a URL, or ``None``."""

DEFAULT_PORTS = {"http": 8080, "socks5": 1080, "socks5h": 1080}

# The most bytes of a proxy's answer to CONNECT read before giving up.
MAX_PROXY_RESPONSE = 64 * 1024

SOCKS5_REPLIES: Dict[int, str] = {
    1: "general SOCKS server failure",
    2: "connection not allowed by ruleset",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


@dataclass(frozen=True)
class Proxy:
    """A parsed proxy URL.

    Attributes:
        scheme: ``"http"``, ``"socks5"`` or ``"socks5h"``.
        host: the proxy's host name or address.
        port: the proxy's port.
        username: the user name, or ``None``.
        password: the password, or ``None``.
    """

    scheme: str
    host: str
    port: int
    username: Optional[str] = None
    password: Optional[str] = None

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """Parse ``http://``, ``socks5://`` or ``socks5h://`` proxy URLs.

    A URL without a scheme (``host:port``, as some environments set
    ``HTTP_PROXY``) is taken as ``http://``.

    Raises:
        ValueError: another scheme, or no host.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(
            f"unsupported proxy {url!r}: use http://, socks5:// or socks5h:// "
            "(a TLS connection to the proxy itself, https://, is not supported)"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid proxy URL {url!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"proxy URL {url!r} has no host")
    username = None if parts.username is None else urllib.parse.unquote(parts.username)
    password = None if parts.password is None else urllib.parse.unquote(parts.password)
    return Proxy(scheme, parts.hostname, port or DEFAULT_PORTS[scheme], username, password)


def proxy_from_environment(host: str, secure: bool) -> Optional[str]:
    """The proxy URL the environment sets for a ``ws://`` or ``wss://`` host, or ``None``.

    ``wss://`` uses the ``https`` proxy, ``ws://`` the ``http`` one, and
    both fall back to ``all``; ``NO_PROXY`` is checked with
    :func:`urllib.request.proxy_bypass`.
    """
    proxies = urllib.request.getproxies()
    url = proxies.get("https" if secure else "http") or proxies.get("all")
    if not url:
        return None
    if urllib.request.proxy_bypass(host):
        return None
    return url


def connect_socket(
    host: str, port: int, *, proxy: ProxyOption, secure: bool, deadline: Deadline
) -> socket.socket:
    """A TCP socket to ``host:port``: direct, or through the proxy ``proxy`` says.

    Raises:
        ProxyError: the proxy refused or failed.
        OSError: the connection could not be made.
        socket.timeout: the deadline passed.
    """
    url: Optional[str]
    if proxy is True:
        url = proxy_from_environment(host, secure)
    elif proxy is None or proxy is False:
        url = None
    else:
        url = proxy
    if url is None:
        return socket.create_connection((host, port), deadline.remaining())
    return open_tunnel(parse_proxy(url), host, port, deadline)


def open_tunnel(proxy: Proxy, host: str, port: int, deadline: Deadline) -> socket.socket:
    """Connect to ``proxy`` and open a tunnel to ``host:port`` through it.

    Returns the connected socket, ready for TLS or the WebSocket handshake.

    Raises:
        ProxyError: the proxy cannot be reached, refused, or failed.
        socket.timeout: the deadline passed.
    """
    try:
        sock = socket.create_connection((proxy.host, proxy.port), deadline.remaining())
    except socket.timeout:
        raise
    except OSError as exc:
        raise ProxyError(
            f"cannot connect to the proxy: {exc}", proxy=str(proxy), status=HTTPStatus.BAD_GATEWAY
        ) from exc
    try:
        if proxy.scheme == "http":
            _http_connect(sock, proxy, host, port, deadline)
        else:
            _socks5_connect(sock, proxy, host, port, deadline)
    except socket.timeout:
        sock.close()
        raise
    except (ConnectionError, BrokenPipeError) as exc:
        # A reset or a write after the proxy hung up: the same failure as a
        # clean close in the middle of the proxy's handshake.
        sock.close()
        raise ProxyError(
            f"the proxy closed the connection in the middle of its handshake ({exc})",
            proxy=str(proxy),
        ) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _http_connect(
    sock: socket.socket, proxy: Proxy, host: str, port: int, deadline: Deadline
) -> None:
    authority = _authority(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.username is not None:
        credentials = f"{proxy.username}:{proxy.password or ''}".encode()
        lines.append("Proxy-Authorization: Basic " + base64.b64encode(credentials).decode())
    sock.settimeout(deadline.remaining())
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = _read_head(sock, proxy, deadline)
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith("HTTP/1.")
        or not (parts[1].isascii() and parts[1].isdigit())
    ):
        raise ProxyError(f"invalid answer to CONNECT: {status_line[:100]!r}", proxy=str(proxy))
    code = int(parts[1])
    if 200 <= code < 300:
        return
    reason = parts[2] if len(parts) > 2 else ""
    try:
        status = HTTPStatus(code)
    except ValueError:
        status = HTTPStatus.BAD_GATEWAY
    raise ProxyError(
        f"CONNECT {authority} refused: {code} {reason}".rstrip(),
        proxy=str(proxy),
        status=status,
        proxy_status=code,
    )


def _read_head(sock: socket.socket, proxy: Proxy, deadline: Deadline) -> bytes:
    """Read the proxy's answer up to its blank line, and not one byte further.

    Peeking first, then reading exactly the head, leaves whatever follows
    it (nothing, normally) for TLS or the WebSocket handshake.
    """
    head = b""
    while True:
        sock.settimeout(deadline.remaining())
        peeked = sock.recv(MAX_PROXY_RESPONSE, socket.MSG_PEEK)
        if not peeked:
            raise ProxyError(
                "the proxy closed the connection before answering CONNECT", proxy=str(proxy)
            )
        end = (head + peeked).find(b"\r\n\r\n")
        if end >= 0:
            head += _recv_exact(sock, end + 4 - len(head), proxy, deadline)
            return head
        head += _recv_exact(sock, len(peeked), proxy, deadline)
        if len(head) > MAX_PROXY_RESPONSE:
            raise ProxyError("the proxy's answer to CONNECT is too long", proxy=str(proxy))


def _recv_exact(sock: socket.socket, size: int, proxy: Proxy, deadline: Deadline) -> bytes:
    chunks = []
    while size > 0:
        sock.settimeout(deadline.remaining())
        chunk = sock.recv(size)
        if not chunk:
            raise ProxyError(
                "the proxy closed the connection in the middle of its handshake",
                proxy=str(proxy),
            )
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _socks5_connect(
    sock: socket.socket, proxy: Proxy, host: str, port: int, deadline: Deadline
) -> None:
    methods = b"\x00\x02" if proxy.username is not None else b"\x00"
    sock.settimeout(deadline.remaining())
    sock.sendall(b"\x05" + bytes([len(methods)]) + methods)
    version, method = _recv_exact(sock, 2, proxy, deadline)
    if version != 5:
        raise ProxyError(f"not a SOCKS5 proxy (version byte {version})", proxy=str(proxy))
    if method == 0xFF:
        wanted = "username/password" if proxy.username is None else "no authentication"
        raise ProxyError(
            f"the proxy accepts none of the offered authentication methods (it may want {wanted})",
            proxy=str(proxy),
            status=HTTPStatus.PROXY_AUTHENTICATION_REQUIRED,
        )
    if method == 2:
        if proxy.username is None:  # pragma: no cover - we did not offer it
            raise ProxyError("the proxy chose an unoffered method", proxy=str(proxy))
        user = proxy.username.encode()
        password = (proxy.password or "").encode()
        if len(user) > 255 or len(password) > 255:
            raise ValueError("SOCKS5 user names and passwords are limited to 255 bytes")
        sock.sendall(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
        _, status = _recv_exact(sock, 2, proxy, deadline)
        if status != 0:
            raise ProxyError(
                "the proxy refused the user name and password",
                proxy=str(proxy),
                status=HTTPStatus.PROXY_AUTHENTICATION_REQUIRED,
            )
    elif method != 0:
        raise ProxyError(f"the proxy chose an unoffered method {method}", proxy=str(proxy))
    sock.sendall(b"\x05\x01\x00" + _socks5_address(proxy, host, port) + port.to_bytes(2, "big"))
    version, reply, _, address_type = _recv_exact(sock, 4, proxy, deadline)
    if reply != 0:
        status = {
            2: HTTPStatus.FORBIDDEN,
            6: HTTPStatus.GATEWAY_TIMEOUT,
        }.get(reply, HTTPStatus.BAD_GATEWAY)
        meaning = SOCKS5_REPLIES.get(reply, "unknown reply")
        raise ProxyError(
            f"cannot reach {_authority(host, port)}: SOCKS5 reply {reply} ({meaning})",
            proxy=str(proxy),
            status=status,
            socks_reply=reply,
        )
    # The address the proxy bound: read past it; nothing else uses it.
    if address_type == 1:
        _recv_exact(sock, 4 + 2, proxy, deadline)
    elif address_type == 4:
        _recv_exact(sock, 16 + 2, proxy, deadline)
    elif address_type == 3:
        (length,) = _recv_exact(sock, 1, proxy, deadline)
        _recv_exact(sock, length + 2, proxy, deadline)
    else:
        raise ProxyError(f"invalid SOCKS5 address type {address_type}", proxy=str(proxy))


def _socks5_address(proxy: Proxy, host: str, port: int) -> bytes:
    """The address field of a SOCKS5 request: an IP, or the name for socks5h."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if proxy.scheme == "socks5h":
            name = host.encode("idna")
            if len(name) > 255:
                raise ValueError(f"host name too long for SOCKS5: {host!r}") from None
            return b"\x03" + bytes([len(name)]) + name
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        address = ipaddress.ip_address(infos[0][4][0])
    if address.version == 4:
        return b"\x01" + address.packed
    return b"\x04" + address.packed
