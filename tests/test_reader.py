"""The Reader on a socket pair, without threads: reading on the application thread, interrupted."""

from __future__ import annotations

import logging
import socket
from typing import Any, List, Tuple

import pytest

from wsthread.connection.messages import MessageQueue
from wsthread.connection.reader import Reader
from wsthread.connection.transport import Transport
from wsthread.connection.writer import Writer
from wsthread.sansio.protocol import Protocol, Side

WAIT = 10.0


def make_reader() -> Tuple[Reader, MessageQueue, socket.socket, List[str]]:
    """A client-side reader whose peer (a socket the test writes server frames to) is returned."""
    ours, peer = socket.socketpair()
    transport = Transport(ours)
    protocol = Protocol(Side.CLIENT)
    logger = logging.getLogger("wsthread.test_reader")
    messages = MessageQueue(None)
    writer = Writer(transport, protocol, write_timeout=WAIT, write_limit=None, logger=logger)
    ended: List[str] = []
    reader = Reader(
        transport,
        protocol,
        messages,
        writer,
        close_timeout=1.0,
        logger=logger,
        on_pong=lambda payload: None,
        on_end=lambda: ended.append("ended"),
        name="test reader",
    )
    return reader, messages, peer, ended


def test_bytes_read_when_a_keyboard_interrupt_comes_are_fed_by_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KeyboardInterrupt between the socket read and the protocol: the next recv() has them."""
    reader, messages, peer, ended = make_reader()
    server = Protocol(Side.SERVER)
    peer.sendall(server.send_text("one") + server.send_text("two"))
    interrupted: List[Any] = []
    process = Reader._process

    def interrupt_once(self: Reader, *args: Any, **options: Any) -> bool:
        if not interrupted:  # as if Ctrl-C landed at the first call after the read
            interrupted.append(options["block"])
            raise KeyboardInterrupt
        return process(self, *args, **options)

    monkeypatch.setattr(Reader, "_process", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        messages.get(WAIT, reader.read_directly)
    assert interrupted == [False]  # it was the application thread's read
    # The queue gave the turn back, and the bytes were kept: no recv needed.
    assert messages.get(WAIT, reader.read_directly) == "one"
    assert messages.get(0, reader.read_directly) == "two"
    peer.sendall(server.send_text("three"))  # the stream goes on, whole
    assert messages.get(WAIT, reader.read_directly) == "three"
    assert reader.bytes_received == 5 + 5 + 7  # each frame counted once (2-byte headers)
    peer.sendall(server.send_close(1000, "bye"))
    peer.shutdown(socket.SHUT_WR)  # and the server's TCP close, which a client waits for
    assert reader.read_directly(WAIT) is False  # the end, ended on this thread
    assert ended == ["ended"]
    peer.close()
