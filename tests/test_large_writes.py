"""Large frames leave as header and payload, never joined: sansio parts, OutBuffer, sendmsg."""

from __future__ import annotations

import os
import socket
import threading
from typing import List

import pytest

from wsthread.connection.transport import OutBuffer, Transport, wait_writable
from wsthread.sansio.frames import (
    Frame,
    FrameParser,
    Opcode,
    serialize_frame,
    serialize_frame_parts,
)
from wsthread.sansio.protocol import Protocol, Side

SIZES = [0, 1, 125, 126, 65535, 65536, 2**20 + 3]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mask", [None, b"\x01\x02\x03\x04"])
def test_parts_join_to_the_serialized_frame(size: int, mask: bytes) -> None:
    """serialize_frame_parts() gives the bytes of serialize_frame(), cut after the header."""
    frame = Frame(Opcode.BINARY, os.urandom(size))
    header, payload = serialize_frame_parts(frame, mask)
    assert header + payload == serialize_frame(frame, mask)
    assert len(payload) == size
    if mask is None:
        assert payload is frame.payload  # not copied


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
@pytest.mark.parametrize("text", [False, True])
def test_protocol_message_parts_parse_back(side: Side, text: bool) -> None:
    """Protocol.send_message_parts() frames a whole message the peer parses back."""
    data = b"a" * 200_000
    header, payload = Protocol(side).send_message_parts(data, text)
    parser = FrameParser(expect_masked=side is Side.CLIENT)
    parser.feed(header + payload)
    frame = parser.next_frame()
    assert frame is not None
    assert frame.opcode == (Opcode.TEXT if text else Opcode.BINARY) and frame.fin
    assert frame.payload == data


def test_out_buffer_sends_many_views_in_order_through_a_small_socket() -> None:
    """OutBuffer keeps views, sends them in order with sendmsg, and resumes mid-buffer."""
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    parts = [os.urandom(n) for n in (7, 70_000, 1, 3, 300_000, 2, 100_000)]
    expected = b"".join(parts)
    received: List[bytes] = []

    def read() -> None:
        total = 0
        while total < len(expected):
            chunk = peer.recv(65536)
            if not chunk:
                return
            received.append(chunk)
            total += len(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out = OutBuffer()
    for part in parts:
        out.append(part)
    assert len(out) == len(expected)
    while out.send(ours):
        assert wait_writable(ours, 5)
    reader.join(10)
    assert b"".join(received) == expected
    ours.close()
    peer.close()


def test_transport_write_parts_then_flush_delivers_a_large_frame() -> None:
    """Transport.write_parts() + flush() put header then payload on the wire, whole."""
    ours, peer = socket.socketpair()
    transport = Transport(ours)
    header, payload = serialize_frame_parts(Frame(Opcode.BINARY, os.urandom(2**20)))
    received: List[bytes] = []
    reader = threading.Thread(target=lambda: received.extend(iter(lambda: peer.recv(65536), b"")))
    reader.start()
    transport.write_parts((header, payload))
    transport.flush(10)
    assert transport.unsent == 0
    ours.shutdown(socket.SHUT_WR)
    reader.join(10)
    assert b"".join(received) == header + payload
    ours.close()
    peer.close()
