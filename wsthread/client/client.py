"""The synchronous WebSocket client: :func:`connect`.

It shares everything past the opening handshake with the server: the same
sans-I/O :class:`~wsthread.sansio.protocol.Protocol` (on the client side it
masks every frame with a fresh random key) and the same threaded
:class:`~wsthread.connection.Connection`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import ssl as ssl_module
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from ..connection.connection import Connection
from ..connection.threads import Keepalive, shared
from ..connection.trace import CLIENT_TO_SERVER, SERVER_TO_CLIENT, Tracer
from ..connection.transport import TLSTransport, Transport
from ..exceptions import ConnectionClosed, InvalidResponse, InvalidStatus, InvalidURI, ProxyError
from ..options import DEFAULT_USER_AGENT, ClientOptions, HeadersLike, ReceiveBudgetOption
from ..runtime.deadline import Deadline
from ..runtime.fdlimit import describe_limit, is_resource_error
from ..sansio.body import BodyReader
from ..sansio.deflate import (
    CompressionOption,
    client_settings,
)
from ..sansio.handshake import (
    Request,
    Response,
    ResponseParser,
    header_pairs,
)
from ..sansio.opening import ClientOpening
from ..sansio.protocol import Protocol, Side
from .proxy import ProxyOption, connect_socket

__all__ = [
    "ClientConnection",
    "connect",
    "unix_connect",
    "reconnect",
    "open_connection",
    "parse_uri",
    "WebSocketURI",
    "DEFAULT_USER_AGENT",
]

logger = logging.getLogger("wsthread")

C = TypeVar("C", bound="ClientConnection")


# Reading a refused handshake's body: the size of each read, and the most
# time it may take (within open_timeout) when the server neither ends the
# body nor closes the connection.
_BODY_READ = 16384
_BODY_WAIT = 5.0


@dataclass(frozen=True)
class WebSocketURI:
    """The parts of a ``ws://`` or ``wss://`` URI that the client needs.

    Attributes:
        secure: ``True`` for ``wss://``.
        host: the host name or address (IPv6 without brackets).
        port: the port, defaulting to 80 or 443.
        resource: the path and query to request, such as ``/chat?room=1``.
    """

    secure: bool
    host: str
    port: int
    resource: str


def parse_uri(uri: str) -> WebSocketURI:
    """Split a WebSocket URI into its parts.

    Raises:
        InvalidURI: not a ``ws://`` or ``wss://`` URI with a host.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{uri!r} is not a valid URI: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(f"{uri!r} is not a WebSocket URI: it must start with ws:// or wss://")
    if not parts.hostname:
        raise InvalidURI(f"{uri!r} has no host")
    if parts.fragment:
        raise InvalidURI(f"{uri!r} has a fragment, which WebSocket URIs may not have")
    secure = parts.scheme == "wss"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return WebSocketURI(secure, parts.hostname, port or (443 if secure else 80), resource)


class ClientConnection(Connection):
    """A connection opened by :func:`connect`.

    It runs its own opening handshake (:meth:`handshake`) on the calling
    thread.

    Attributes:
        request: the upgrade request that was sent.
        response: the server's ``101`` response (``None`` until it is read).
        subprotocol: the subprotocol the server chose, or ``None``.
    """

    def __init__(
        self,
        transport: Transport,
        protocol: Protocol,
        *,
        request: Request,
        response: Optional[Response] = None,
        subprotocol: Optional[str] = None,
        keepalive: Optional[Keepalive] = None,
        tracer: Optional[Tracer] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(transport, protocol, **kwargs)
        self.request = request
        self.response = response
        self.subprotocol = subprotocol
        self._keepalive = keepalive
        self._tracer = tracer

    def handshake(self, opening: ClientOpening, deadline: Deadline) -> None:
        """Send the upgrade request and check the server's answer, within ``deadline``.

        Args:
            opening: the sans-I/O side of the handshake: :attr:`request` is
                its request, and it checks the answer.
            deadline: when the time for the handshake is up.

        Raises:
            InvalidStatus: the server answered with another status than 101
                (with its headers and the first 64 KiB of its body).
            InvalidResponse: the answer breaks the protocol, or the server
                closed the connection before answering.
            socket.timeout: the deadline passed.
            OSError: the connection failed.
        """
        head = self.request.serialize()
        if self._tracer is not None:
            self._tracer.handshake(CLIENT_TO_SERVER, head)
        try:
            self.writer.send_http(head, deadline.remaining())
        except ConnectionClosed as exc:  # the write failed: say how
            raise (exc.__cause__ or exc) from None
        parser = ResponseParser()
        response = self.reader.read_http(parser, deadline)
        if response is None:
            raise InvalidResponse("the server closed the connection during the handshake")
        if self._tracer is not None:
            self._tracer.handshake(SERVER_TO_CLIENT, response.serialize())
        if response.status != 101:  # a refusal: its body says why
            response = self._with_body(response, parser.trailing_data, deadline)
        opened = opening.check(response)
        self.subprotocol = opened.subprotocol
        if opened.deflate is not None:
            parameters, offer = opened.deflate
            self.protocol.use_deflate(offer.codec(parameters, is_server=False))
        self.response = response
        self.reader.handshake_done(parser.trailing_data)

    def _with_body(self, response: Response, received: bytes, deadline: Deadline) -> Response:
        """``response`` with the first 64 KiB of its body, read within ``deadline``.

        A body that does not come in time, or a connection that fails, leaves
        what arrived: the refusal is reported either way.
        """
        body = BodyReader(response.status, response.headers)
        remaining = deadline.remaining()
        wait = Deadline(_BODY_WAIT if remaining is None else min(remaining, _BODY_WAIT))
        try:
            done = body.feed(received)
            while not done:
                data = self.transport.recv(_BODY_READ, wait.remaining())
                if not data:
                    body.eof()
                done = body.feed(data) or not data
        except OSError:  # socket.timeout is one: keep what arrived
            pass
        return Response(
            response.status, response.reason, response.headers, body.body, response.version
        )

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Perform the closing handshake, then release the socket."""
        try:
            super().close(code, reason)
        finally:
            if self._keepalive is not None:
                self._keepalive.remove(self)
            if threading.current_thread() is not self.reader.thread:
                self.transport.close()

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(
    uri: str,
    *,
    sock: Optional[socket.socket] = None,
    proxy: ProxyOption = True,
    # -- parameters of ClientOptions for clients --
    open_timeout: Optional[float] = 10,
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    close_timeout: Optional[float] = 10,
    write_timeout: Optional[float] = 10,
    max_size: Optional[int] = 2**20,
    max_queue: Optional[int] = 16,
    receive_budget: ReceiveBudgetOption = "auto",
    trace: Optional[Any] = None,
    logger: Optional[logging.Logger] = None,
    json_dumps: Optional[Callable[[Any], Union[str, bytes]]] = None,
    json_loads: Optional[Callable[[Any], Any]] = None,
    compression: CompressionOption = "deflate",
    ssl: Optional[ssl_module.SSLContext] = None,
    server_hostname: Optional[str] = None,
    origin: Optional[str] = None,
    subprotocols: Optional[Sequence[str]] = None,
    additional_headers: Optional[HeadersLike] = None,
    user_agent_header: Optional[str] = DEFAULT_USER_AGENT,
    # -- end of ClientOptions parameters, written by tools/options.py --
) -> ClientConnection:
    """Open a WebSocket connection to ``uri`` and return it once the handshake is done.

    Args:
        uri: ``ws://host[:port]/path`` or ``wss://...``.
        sock: a connected socket to use instead of connecting to the URI's
            host and port: one end of a ``socketpair()``, a Unix socket (see
            :func:`unix_connect`), a tunnel. The URI still gives the
            ``Host`` header, the path and whether to speak TLS. The
            connection owns the socket from then on, and closes it, even if
            the handshake fails.
        ssl: the TLS context for ``wss://``; by default the system's trust
            store, with certificate and host name checking.
        server_hostname: the name to check the certificate against (and send
            in SNI) instead of the URI's host.
        origin: an ``Origin`` header to send.
        subprotocols: subprotocols to offer, in order of preference.
        additional_headers: extra request headers, as ``(name, value)`` pairs
            or a mapping.
        user_agent_header: the ``User-Agent`` header, ``"wsthread"`` by
            default; ``None`` sends none.
        compression: ``"deflate"`` offers permessage-deflate as browsers do
            (``Deflate()``); a :class:`~wsthread.Deflate`, or a list of them
            (several offers, in order of preference), says which parameters
            to offer; ``None`` offers nothing.
        proxy: ``True`` (the default) uses the proxy that ``HTTPS_PROXY``
            (``wss://``), ``HTTP_PROXY`` (``ws://``) or ``ALL_PROXY`` set,
            unless ``NO_PROXY`` matches the host; a URL
            (``http://[user:pass@]host:port``, ``socks5://...`` or
            ``socks5h://...``) uses that proxy; ``None`` connects directly.
            Not used with ``sock``. See :mod:`wsthread.client.proxy`.
        open_timeout: seconds for TCP, TLS and the HTTP handshake together.
        ping_interval: seconds between keepalive pings; ``None`` disables them.
        ping_timeout: seconds to wait for a pong before closing with 1011.
        close_timeout: seconds to wait for the closing handshake.
        max_size: the largest message accepted (1009 beyond); ``None``: no limit.
        max_queue: received messages buffered before reading pauses (each
            frame of a fragmented message counts as one).
        receive_budget: bytes of received messages not yet read, across every
            connection of the process with the same value (clients and
            servers), past which reader threads stop reading and TCP pushes
            back; a thread waiting in ``recv()`` still reads its own
            connection. ``"auto"`` (the default): 1/16 of the machine's
            memory, at most 64 MiB; ``None``: no budget.
        write_timeout: seconds a write may make no progress (the server
            takes no data) before the connection is given up; ``None``: never.
        trace: a :class:`wsthread.trace.Tracer` that writes the opening
            handshake and every frame, annotated (lines prefixed with the URI).
        logger: the logger to use instead of ``logging.getLogger("wsthread")``.
        json_dumps: the JSON encoder of ``send_json()``, such as
            ``orjson.dumps`` (bytes are sent as text); ``None``:
            ``json.dumps`` with compact separators.
        json_loads: the JSON decoder of ``recv_json()``, such as
            ``orjson.loads``; ``None``: ``json.loads``.

    Raises:
        InvalidURI: ``uri`` is not a WebSocket URI.
        InvalidStatus: the server answered with another status than 101
            (its ``status`` attribute tells which; ``headers`` and ``body``,
            the first 64 KiB, say why, and its text shows the body's start).
        InvalidResponse: the server's 101 answer breaks the protocol.
        ProxyError: the proxy refused or could not open the tunnel (its
            ``status`` says why: 407 for refused credentials...).
        TimeoutError: the handshake took longer than ``open_timeout``.
        OSError: the connection could not be made (refused, TLS failure...).
    """
    options = ClientOptions(
        # -- arguments of ClientOptions for clients --
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        max_size=max_size,
        max_queue=max_queue,
        receive_budget=receive_budget,
        trace=trace,
        logger=logger,
        json_dumps=json_dumps,
        json_loads=json_loads,
        compression=compression,
        ssl=ssl,
        server_hostname=server_hostname,
        origin=origin,
        subprotocols=subprotocols,
        additional_headers=additional_headers,
        user_agent_header=user_agent_header,
        # -- end of ClientOptions arguments, written by tools/options.py --
    )
    target = parse_uri(uri)
    deadline = Deadline(open_timeout)
    if sock is None:
        sock = _open_socket(target, proxy, deadline, uri, open_timeout)
    return open_connection(ClientConnection, sock, uri, options, deadline=deadline)


def open_connection(
    connection_class: Type[C],
    sock: socket.socket,
    uri: str,
    options: Optional[ClientOptions] = None,
    *,
    deadline: Optional[Deadline] = None,
    **connection_options: Any,
) -> C:
    """Open a WebSocket over the connected ``sock``, as :func:`connect` does once it has a socket.

    TLS for ``wss://``, the handshake within ``open_timeout`` (or by
    ``deadline``, started earlier), then the connection starts. ``options``
    are :func:`connect`'s, as one :class:`~wsthread.options.ClientOptions`;
    ``connection_options`` go to ``connection_class`` (a
    :class:`ClientConnection` or a subclass, such as
    :class:`wsthread.testing.TestConnection`). The connection owns ``sock``:
    it is closed if the handshake fails.

    Raises ``TimeoutError`` when the handshake takes too long, and what :func:`connect` raises.
    """
    options = options if options is not None else ClientOptions()
    deadline = deadline or Deadline(options.open_timeout)
    try:
        target = parse_uri(uri)
        transport = _client_transport(sock, target, options.ssl, options.server_hostname, deadline)
        opening = ClientOpening(
            target.host,
            target.port,
            target.resource,
            secure=target.secure,
            origin=options.origin,
            subprotocols=list(options.subprotocols or ()),
            offers=client_settings(options.compression),
            extra_headers=_request_headers(options.additional_headers, options.user_agent_header),
        )
        trace = options.trace
        tracer = None if trace is None else trace.connection(uri)
        interval = options.ping_interval
        pings = None if interval is None else shared(Keepalive, interval, options.ping_timeout)
        connection = connection_class(
            transport,
            Protocol(Side.CLIENT, max_size=options.max_size, trace=tracer),
            options=options,
            request=opening.request,
            keepalive=pings,
            tracer=tracer,
            **connection_options,
        )
        connection.handshake(opening, deadline)
    except socket.timeout:
        sock.close()
        timeout = options.open_timeout
        raise TimeoutError(f"the opening handshake with {uri} took over {timeout}s") from None
    except BaseException:
        sock.close()
        raise
    connection.start()
    if pings is not None:
        pings.add(connection)
    return connection


def _request_headers(
    additional_headers: Optional[HeadersLike], user_agent: Optional[str]
) -> List[Tuple[str, str]]:
    """The extra headers of the upgrade request, ``User-Agent`` first unless given."""
    headers = header_pairs(additional_headers)
    if user_agent is not None and all(name.lower() != "user-agent" for name, _ in headers):
        headers.insert(0, ("User-Agent", user_agent))
    return headers


def _open_socket(
    target: WebSocketURI,
    proxy: ProxyOption,
    deadline: Deadline,
    uri: str,
    open_timeout: Optional[float],
) -> socket.socket:
    """Connect to the server (through the proxy, if any), within ``deadline``."""
    try:
        return connect_socket(
            target.host, target.port, proxy=proxy, secure=target.secure, deadline=deadline
        )
    except socket.timeout:
        raise TimeoutError(f"could not connect to {uri} within {open_timeout}s") from None
    except OSError as exc:
        if is_resource_error(exc):  # say which limit, and how to raise it
            raise OSError(exc.errno, f"{exc.strerror}; {describe_limit()}") from exc
        raise


def _client_transport(
    sock: socket.socket,
    target: WebSocketURI,
    ssl: Optional[ssl_module.SSLContext],
    server_hostname: Optional[str],
    deadline: Deadline,
) -> Transport:
    """The transport over a connected socket: TLS (handshake done) for ``wss://``."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not target.secure:
        return Transport(sock)
    context = ssl if ssl is not None else ssl_module.create_default_context()
    return TLSTransport.handshake(
        sock,
        context,
        server_side=False,
        server_hostname=server_hostname or target.host,
        deadline=deadline,
    )


def unix_connect(
    path: Union[str, os.PathLike[str]],
    uri: str = "ws://localhost/",
    *,
    # -- parameters of ClientOptions for clients --
    open_timeout: Optional[float] = 10,
    ping_interval: Optional[float] = 20,
    ping_timeout: Optional[float] = 20,
    close_timeout: Optional[float] = 10,
    write_timeout: Optional[float] = 10,
    max_size: Optional[int] = 2**20,
    max_queue: Optional[int] = 16,
    receive_budget: ReceiveBudgetOption = "auto",
    trace: Optional[Any] = None,
    logger: Optional[logging.Logger] = None,
    json_dumps: Optional[Callable[[Any], Union[str, bytes]]] = None,
    json_loads: Optional[Callable[[Any], Any]] = None,
    compression: CompressionOption = "deflate",
    ssl: Optional[ssl_module.SSLContext] = None,
    server_hostname: Optional[str] = None,
    origin: Optional[str] = None,
    subprotocols: Optional[Sequence[str]] = None,
    additional_headers: Optional[HeadersLike] = None,
    user_agent_header: Optional[str] = DEFAULT_USER_AGENT,
    # -- end of ClientOptions parameters, written by tools/options.py --
) -> ClientConnection:
    """Open a WebSocket connection over the Unix socket ``path``.

    ``uri`` gives the request's ``Host`` header and path (and ``wss://``
    asks for TLS over the Unix socket); it is not used to find the server.
    Takes the same ``options`` as :func:`connect`.

    Raises:
        OSError: nothing listens at ``path``; see :func:`connect` for the rest.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(open_timeout)
        sock.connect(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    return connect(
        uri,
        sock=sock,
        # -- arguments of ClientOptions for clients --
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        write_timeout=write_timeout,
        max_size=max_size,
        max_queue=max_queue,
        receive_budget=receive_budget,
        trace=trace,
        logger=logger,
        json_dumps=json_dumps,
        json_loads=json_loads,
        compression=compression,
        ssl=ssl,
        server_hostname=server_hostname,
        origin=origin,
        subprotocols=subprotocols,
        additional_headers=additional_headers,
        user_agent_header=user_agent_header,
        # -- end of ClientOptions arguments, written by tools/options.py --
    )


def reconnect(
    uri: str,
    *,
    min_delay: float = 1.0,
    max_delay: float = 60.0,
    factor: float = 2.0,
    **options: Any,
) -> Iterator[ClientConnection]:
    """Yield a fresh connection to ``uri`` each time the previous one drops.

    For long-running clients::

        for ws in wsthread.reconnect("ws://example.com/feed"):
            try:
                for message in ws:
                    handle(message)
            except wsthread.ConnectionClosedError:
                continue  # dropped: reconnect

    Failed attempts are retried after a random delay between 0 and the
    current backoff (full jitter), which starts at ``min_delay`` and is
    multiplied by ``factor`` after each failure, up to ``max_delay``; it
    resets after a successful connection. Network errors, timeouts and 5xx
    answers are retried; an invalid URI, a 4xx answer or a broken handshake
    is raised (so is a proxy's refusal below 500, such as 407). The loop
    ends after a connection closed cleanly with 1000, or
    when the caller breaks out (the current connection is then closed).

    Args:
        uri: as for :func:`connect`.
        min_delay: the first backoff, in seconds.
        max_delay: the largest backoff, in seconds.
        factor: how much the backoff grows after each failure.
        options: keyword arguments for :func:`connect`.
    """
    backoff = _Backoff(min_delay, max_delay, factor)
    while True:
        try:
            connection = connect(uri, **options)
        except (InvalidStatus, ProxyError) as exc:
            if exc.status < 500:
                raise
            failure: BaseException = exc
        except (OSError, TimeoutError) as exc:
            failure = exc
        else:
            backoff.reset()
            try:
                yield connection
            finally:
                connection.close()
            if connection.close_code == 1000:
                return
            logger.info("connection to %s lost (code %s); reconnecting", uri, connection.close_code)
            continue
        backoff.wait_after(failure, uri)


class _Backoff:
    """The waits of :func:`reconnect`: full jitter, growing by ``factor`` up to ``max_delay``."""

    def __init__(self, min_delay: float, max_delay: float, factor: float) -> None:
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.factor = factor
        self.backoff = min_delay
        self.short_of_resources = False  # warned once per episode of EMFILE and the like

    def reset(self) -> None:
        """A connection succeeded: start again from ``min_delay``."""
        self.backoff = self.min_delay
        self.short_of_resources = False

    def wait_after(self, failure: BaseException, uri: str) -> None:
        """Log the failed attempt, sleep a random delay up to the backoff, then grow it."""
        delay = random.uniform(0, self.backoff)
        if is_resource_error(failure) and not self.short_of_resources:
            self.short_of_resources = True
            logger.warning("cannot connect to %s (%s); retrying with backoff", uri, failure)
        else:
            logger.info("cannot connect to %s (%s); retrying in %.1fs", uri, failure, delay)
        time.sleep(delay)
        self.backoff = min(self.max_delay, self.backoff * self.factor)
