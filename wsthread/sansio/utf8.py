"""Incremental UTF-8 validation that fails as soon as the bytes cannot be UTF-8.

RFC 6455 §8.1 lets an endpoint fail a connection on invalid UTF-8 as soon as
it sees it, without waiting for the end of the message. Python's incremental
decoder already rejects most bad prefixes at once; the one it holds back is
an encoded surrogate (``ED A0``-``ED BF``), which it only rejects once the
third byte arrives. :class:`Utf8Decoder` rejects that prefix too.
"""

from __future__ import annotations

import codecs
from typing import Tuple, Union

from ..exceptions import InvalidUTF8

__all__ = ["Utf8Decoder"]


class Utf8Decoder:
    """Decode a text message piece by piece, raising :class:`InvalidUTF8` early."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        # Whether the decoder holds no partial character: a whole message in
        # one piece is then decoded in one C call (the common case).
        self._clean = True

    def decode(self, data: Union[bytes, bytearray, memoryview], final: bool = False) -> str:
        """Decode the next piece; ``final`` marks the end of the message.

        Raises:
            InvalidUTF8: the bytes so far cannot be the start of valid UTF-8
                (or, with ``final``, end inside a character). The error comes
                at the first impossible byte, even in the middle of a frame.
        """
        try:
            if final and self._clean:
                return str(data, "utf-8")
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InvalidUTF8(f"invalid UTF-8: {exc.reason}") from exc
        if final:
            self._clean = True  # a final decode that succeeded leaves nothing behind
        else:
            pending = self._decoder.getstate()[0]
            self._clean = not pending
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                # CPython's words for these bytes once the third arrives: the
                # close reason must not depend on how the text was cut.
                raise InvalidUTF8("invalid UTF-8: invalid continuation byte")
        return text

    @property
    def pending(self) -> bool:
        """Whether the bytes so far end inside a character."""
        return bool(self._decoder.getstate()[0])

    def getstate(self) -> Tuple[bytes, int]:
        """The decoder's state: the bytes of an unfinished character (see :meth:`setstate`)."""
        return self._decoder.getstate()

    def setstate(self, state: Tuple[bytes, int]) -> None:
        """Continue from a state that :meth:`getstate` returned (of this or another decoder)."""
        self._decoder.setstate(state)
        self._clean = not state[0]

    def reset(self) -> None:
        """Forget any partial character, ready for a new message."""
        self._decoder.reset()
        self._clean = True
