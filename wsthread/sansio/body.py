"""The body of a refused upgrade's HTTP response, collected up to a limit, without I/O.

A server that refuses a WebSocket handshake (401, 403, 429...) usually
says why in its response body: "token expired". The client reads that
body, at most :data:`BODY_LIMIT` bytes, so that
:class:`~wsthread.exceptions.InvalidStatus` can show it. How the body ends
follows RFC 9112 §6.3: no body for 1xx, 204 and 304; ``Transfer-Encoding:
chunked`` (decoded); ``Content-Length``; otherwise the end of the
connection. :class:`BodyReader` is fed the bytes as they arrive and says
when it has enough; the caller decides how long to wait for them.
"""

from __future__ import annotations

import re
from typing import Optional

from .handshake import Headers

__all__ = ["BODY_LIMIT", "BodyReader"]

BODY_LIMIT = 64 * 1024
"""How many bytes of a refused handshake's response body the client keeps."""

_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
# A chunk-size line longer than this is not one: stop reading.
_MAX_SIZE_LINE = 1024


class BodyReader:
    """Collects one response body, up to ``limit`` bytes; :meth:`feed` says when it is done.

    Args:
        status: the response's status code.
        headers: the response's headers, which say how the body ends.
        limit: the most bytes of body kept; past it, the rest is not read.
    """

    def __init__(self, status: int, headers: Headers, limit: int = BODY_LIMIT) -> None:
        self.limit = limit
        self._body = bytearray()
        self._raw = bytearray()  # chunked: bytes not decoded yet
        self._chunk_left = 0  # chunked: bytes of the current chunk still to come
        self.truncated = False
        """Whether the body went on past ``limit`` (only the start is kept)."""
        self.done = status < 200 or status in (204, 304)
        """Whether the body is complete, or its first ``limit`` bytes are here."""
        encodings = ",".join(headers.get_all("Transfer-Encoding")).lower()
        self._chunked = encodings.rstrip().endswith("chunked")
        self._length: Optional[int] = None
        length = headers.get("Content-Length")
        if not self._chunked and length is not None and length.strip().isdigit():
            self._length = int(length.strip())
            self.done = self.done or self._length == 0

    @property
    def body(self) -> bytes:
        """The body received so far (all of it once :attr:`done`, up to ``limit``)."""
        return bytes(self._body)

    def feed(self, data: bytes) -> bool:
        """Take bytes received after the head (or after the last call); ``True`` once done."""
        if self.done or not data:
            return self.done
        if self._chunked:
            self._raw += data
            self._dechunk()
        else:
            self._keep(data)
            if self._length is not None and len(self._body) >= self._length:
                del self._body[self._length :]
                self.done = True
        return self.done

    def eof(self) -> None:
        """The connection ended: whatever arrived is the body."""
        self.done = True

    def _keep(self, data: bytes) -> None:
        """Append body bytes, up to the limit; reaching it ends the reading."""
        room = self.limit - len(self._body)
        self._body += data[:room]
        if len(data) > room:
            self.truncated = self.done = True

    def _dechunk(self) -> None:
        """Decode the chunks that are complete in ``_raw``."""
        raw = self._raw
        while not self.done and raw:
            if self._chunk_left:
                piece = bytes(raw[: self._chunk_left])
                del raw[: len(piece)]
                self._chunk_left -= len(piece)
                self._keep(piece)
                continue
            if raw.startswith(b"\r\n"):  # the end of the previous chunk's data
                del raw[:2]
                continue
            match = _CHUNK_SIZE.match(raw)
            if match is None:
                # Not a whole size line yet, or not one at all.
                if b"\n" in raw or len(raw) > _MAX_SIZE_LINE:
                    self.done = True
                return
            size = int(match.group(1), 16)  # before the del: the match reads `raw`
            del raw[: match.end()]
            if size == 0:
                self.done = True
            self._chunk_left = size
