"""Options as one typed value: each option once, with its default, meaning and check; any thread.

:class:`ConnectionOptions` holds what every connection has (limits,
timeouts, compression, JSON); :class:`ServerOptions` and
:class:`ClientOptions` add each side's own. They are frozen dataclasses:
:func:`wsthread.serve` and :func:`wsthread.connect` build one from their
keyword arguments, at the call, and pass it down whole; nothing below them
declares an option again. Building one checks every value, so a bad one
raises ``TypeError`` or ``ValueError`` naming the option at the call::

    >>> ServerOptions(max_size=-1)
    Traceback (most recent call last):
      ...
    ValueError: max_size must be a number of bytes >= 0 or None, not -1

Each field's ``metadata["doc"]`` is its one-line meaning; the options
tables of the README and ``docs/reference/options.md`` are checked against
the fields (``tests/test_options.py``). To add an option: add the field
here, with its default, doc and check, and use it where it acts; the
public functions' keyword parameters are checked against the fields too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl as ssl_module
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .sansio.deflate import CompressionOption, Deflate, client_settings, server_settings
from .sansio.handshake import Request, Response

__all__ = [
    "ConnectionOptions",
    "ServerOptions",
    "ClientOptions",
    "ReceiveBudgetOption",
    "DEFAULT_USER_AGENT",
    "DEFAULT_RECEIVE_BUDGET",
    "default_receive_budget",
    "receive_budget_bytes",
]

ReceiveBudgetOption = Union[int, str, None]
"""``receive_budget=``: bytes, ``"auto"`` or ``None`` (no budget)."""

DEFAULT_USER_AGENT = "wsthread"
"""The ``User-Agent`` header the client sends by default."""

HeadersLike = Union[Mapping[str, str], Iterable[Tuple[str, str]]]
"""Headers given as a mapping or as ``(name, value)`` pairs."""


def default_receive_budget() -> int:
    """The default ``receive_budget``: 1/16 of the machine's memory, at most 64 MiB.

    64 MiB of messages waiting for handlers is plenty to keep every
    connection busy (more would only add latency: the peers' data waits in
    the kernel and in the peers instead), and 1/16 keeps a small board
    (a 512 MiB Raspberry Pi: 32 MiB) out of trouble.
    """
    cap = 64 * 2**20
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not on this platform
        return cap
    return max(2**20, min(cap, memory // 16)) if memory > 0 else cap


#: What ``receive_budget="auto"`` (the default of :func:`~wsthread.serve` and
#: :func:`~wsthread.connect`) means on this machine, in bytes (see
#: :func:`default_receive_budget`).
DEFAULT_RECEIVE_BUDGET = default_receive_budget()


def receive_budget_bytes(option: ReceiveBudgetOption) -> Optional[int]:
    """The bytes a ``receive_budget=`` option stands for (``None``: no budget).

    Raises:
        ValueError: neither a positive number of bytes, ``"auto"`` nor ``None``.
    """
    if option is None:
        return None
    if option == "auto":
        return DEFAULT_RECEIVE_BUDGET
    if isinstance(option, int) and not isinstance(option, bool) and option > 0:
        return option
    raise ValueError(
        f"receive_budget must be a positive number of bytes, 'auto' or None: {option!r}"
    )


# -- checks: each raises TypeError or ValueError naming the option -----------------


def _seconds(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0 or None, not {value!r}")


def _size(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a number of bytes (an int) or None, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be a number of bytes >= 0 or None, not {value!r}")


def _count(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 or None, not {value!r}")


def _receive_budget(name: str, value: Any) -> None:
    receive_budget_bytes(value)


def _server_compression(name: str, value: Any) -> None:
    server_settings(value)


def _client_compression(name: str, value: Any) -> None:
    client_settings(value)


def _callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {value!r}")


def _text(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {value!r}")


def _logger(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (logging.Logger, logging.LoggerAdapter)):
        raise TypeError(f"{name} must be a logging.Logger or None, not {value!r}")


def _ssl(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, ssl_module.SSLContext):
        raise TypeError(f"{name} must be an ssl.SSLContext or None, not {value!r}")


def _strings(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{name} must be a sequence of str or None, not {value!r}")


def _origins(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, (str, bytes)) or not all(
        item is None or isinstance(item, str) for item in value
    ):
        raise TypeError(f"{name} must be a sequence of str (or None) or None, not {value!r}")


def option(default: Any, doc: str, check: Optional[Callable[[str, Any], None]] = None) -> Any:
    """A dataclass field for one option: its default, its one-line meaning and its check."""
    return field(default=default, metadata={"doc": doc, "check": check})


@dataclass(frozen=True)
class ConnectionOptions:
    """The options of every connection, server or client side."""

    open_timeout: Optional[float] = option(
        10, "seconds to complete the TLS and HTTP opening handshakes", _seconds
    )
    ping_interval: Optional[float] = option(
        20, "seconds between keepalive pings, whatever the traffic (`None`: off)", _seconds
    )
    ping_timeout: Optional[float] = option(
        20, "seconds to wait for a pong before closing with 1011", _seconds
    )
    close_timeout: Optional[float] = option(
        10, "seconds to wait for the closing handshake", _seconds
    )
    write_timeout: Optional[float] = option(
        10, "seconds a write may make no progress before the connection is given up", _seconds
    )
    max_size: Optional[int] = option(
        2**20, "largest message in bytes (1009 beyond; `None`: no limit)", _size
    )
    max_queue: Optional[int] = option(
        16, "received messages buffered before the reader stops reading", _count
    )
    receive_budget: ReceiveBudgetOption = option(
        "auto",
        "bytes of unread messages across the process's connections before readers pause",
        _receive_budget,
    )
    write_limit: Optional[int] = option(
        2**20, "bytes a broadcast may leave waiting for one client; beyond: closed with 1013", _size
    )
    trace: Optional[Any] = option(
        None, "a `wsthread.trace.Tracer`: the handshake and every frame, annotated"
    )
    logger: Optional[logging.Logger] = option(
        None, 'where the connection logs (`logging.getLogger("wsthread")`)', _logger
    )
    thread_stack_size: Optional[int] = option(
        None, "the stack of each connection's threads, in bytes (`None`: the platform's)", _size
    )
    json_dumps: Optional[Callable[[Any], Union[str, bytes]]] = option(
        None,
        "the encoder of `send_json()`, such as `orjson.dumps` (`None`: `json.dumps`)",
        _callable,
    )
    json_loads: Optional[Callable[[Any], Any]] = option(
        None,
        "the decoder of `recv_json()`, such as `orjson.loads` (`None`: `json.loads`)",
        _callable,
    )

    def __post_init__(self) -> None:
        for each in dataclasses.fields(self):
            check = each.metadata.get("check")
            if check is not None:
                check(each.name, getattr(self, each.name))

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` (checked like any other value)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ServerOptions(ConnectionOptions):
    """The options of a server: :func:`wsthread.serve` and :class:`~wsthread.WebSocketServer`."""

    compression: CompressionOption = option(
        "deflate",
        'accept permessage-deflate (`"deflate"`, a `wsthread.Deflate(...)`; `None`: off)',
        _server_compression,
    )
    origins: Optional[Sequence[Optional[str]]] = option(
        None, "acceptable `Origin` values (`None` in the list: no header); others get 403", _origins
    )
    subprotocols: Optional[Sequence[str]] = option(
        None, "supported subprotocols, in order of preference", _strings
    )
    select_subprotocol: Optional[Callable[[Any, List[str]], Optional[str]]] = option(
        None, "`fn(connection, offered)` picking one of `offered` (or `None`) instead", _callable
    )
    process_request: Optional[Callable[[Any, Request], Optional[Response]]] = option(
        None,
        "`fn(connection, request)`: `None` upgrades, a `wsthread.Response` answers plain HTTP",
        _callable,
    )
    process_response: Optional[Callable[[Any, Request, Response], Optional[Response]]] = option(
        None,
        "`fn(connection, request, response)`: change the 101, or return a Response instead",
        _callable,
    )
    server_header: Optional[str] = option("wsthread", "the `Server` header (`None`: none)", _text)
    extra_headers: Union[HeadersLike, Callable[[Any, Request], HeadersLike], None] = option(
        None, "headers for the 101: pairs, a mapping, or `fn(connection, request)`"
    )
    max_connections: Optional[int] = option(
        1024, "open connections at once; the next handshake gets 503", _count
    )
    max_subscriptions: Optional[int] = option(
        1024, "topics one connection may watch at once", _count
    )
    trusted_proxies: Optional[Sequence[str]] = option(
        None, "proxies whose `X-Forwarded-For` sets `connection.client_host`", _strings
    )
    hub: Any = option(None, "carries broadcasts between processes (`wsthread.hubs.RedisHub`)")
    reuse_port: bool = option(False, "`SO_REUSEPORT`, for several processes on one port")
    ssl: Optional[ssl_module.SSLContext] = option(
        None, "an `ssl.SSLContext` to serve `wss://`", _ssl
    )
    wsgi: Optional[Callable[..., Any]] = option(
        None, "a WSGI app served for every request that is not an upgrade to a route", _callable
    )
    max_body_size: Optional[int] = option(
        2**24, "the largest HTTP request body for `wsgi` (413 beyond)", _size
    )
    max_http_connections: Optional[int] = option(
        1024,
        "plain HTTP connections served to `wsgi` at once, kept-alive ones too (503 beyond)",
        _count,
    )

    @property
    def deflate(self) -> Optional[Deflate]:
        """The permessage-deflate settings that ``compression`` stands for (``None``: off)."""
        return server_settings(self.compression)


@dataclass(frozen=True)
class ClientOptions(ConnectionOptions):
    """The options of a client: :func:`wsthread.connect`."""

    compression: CompressionOption = option(
        "deflate",
        'offer permessage-deflate (`"deflate"`, a `wsthread.Deflate(...)` or a list; `None`: off)',
        _client_compression,
    )
    ssl: Optional[ssl_module.SSLContext] = option(
        None, "an `ssl.SSLContext` for `wss://` (default: the system's trust store)", _ssl
    )
    server_hostname: Optional[str] = option(
        None, "the name the TLS certificate must have (default: the URI's host)", _text
    )
    origin: Optional[str] = option(None, "the `Origin` header", _text)
    subprotocols: Optional[Sequence[str]] = option(
        None, "subprotocols offered, in order of preference", _strings
    )
    additional_headers: Optional[HeadersLike] = option(None, "more headers for the upgrade request")
    user_agent_header: Optional[str] = option(
        DEFAULT_USER_AGENT, "the `User-Agent` header (`None`: none)", _text
    )
