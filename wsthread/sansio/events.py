"""The events a :class:`~wsthread.sansio.protocol.Protocol` returns: small frozen dataclasses.

Pure data, made by the sans-I/O core on the thread that feeds it bytes and
read by the I/O layer. :mod:`wsthread.sansio.protocol` re-exports them; import
them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["Message", "Fragment", "Ping", "Pong", "CloseReceived", "Event"]


@dataclass(frozen=True)
class Message:
    """A complete message: ``str`` for text, ``bytes`` for binary."""

    data: Union[str, bytes]


@dataclass(frozen=True)
class Fragment:
    """One frame of a fragmented message, delivered as it arrives (``fragments=True``).

    ``data`` is ``str`` for a text message (each piece already checked and
    decoded as UTF-8; a character split between frames comes whole in the
    later piece) and ``bytes`` for a binary one; ``fin`` marks the last
    piece. A message sent in one frame still arrives as one :class:`Message`.
    """

    data: Union[str, bytes]
    fin: bool


@dataclass(frozen=True)
class Ping:
    """A ping arrived; the pong is already waiting in :meth:`Protocol.data_to_send`."""

    data: bytes


@dataclass(frozen=True)
class Pong:
    """A pong arrived."""

    data: bytes


@dataclass(frozen=True)
class CloseReceived:
    """The peer started or answered the closing handshake."""

    code: int
    reason: str


Event = Union[Message, Fragment, Ping, Pong, CloseReceived]
