"""Incremental UTF-8 validation that fails fast (RFC 6455 §8.1), no sockets."""

from __future__ import annotations

import itertools
import random
from typing import Optional

import pytest

from wsthread.exceptions import InvalidUTF8, ProtocolError
from wsthread.sansio.utf8 import Utf8Decoder

# "κόσμε" followed by F4 90 80 80 (U+110000, past the last code point).
KOSME_BAD = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"
KOSME = "\u03ba\u1f79\u03c3\u03bc\u03b5"  # the five Greek letters of KOSME_BAD[:11]

# Bytes that can follow a lead byte in some valid sequence (boundaries of every range).
_CONTINUATIONS = [bytes([b]) for b in (0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF)]


def viable(prefix: bytes) -> bool:
    """Tell whether some valid UTF-8 text starts with ``prefix`` (brute force)."""
    for size in range(4):
        for tail in itertools.product(_CONTINUATIONS, repeat=size):
            try:
                (prefix + b"".join(tail)).decode("utf-8")
            except UnicodeDecodeError:
                continue
            return True
    return False


def first_failure_byte_by_byte(data: bytes) -> Optional[int]:
    """Feed ``data`` one byte at a time (final=False); return the index that raised."""
    decoder = Utf8Decoder()
    for index in range(len(data)):
        try:
            decoder.decode(data[index : index + 1])
        except InvalidUTF8:
            return index
    return None


def test_invalid_utf8_is_a_protocol_error_with_1007() -> None:
    """InvalidUTF8 is a ProtocolError carrying close code 1007."""
    with pytest.raises(ProtocolError) as info:
        Utf8Decoder().decode(b"\xff")
    assert isinstance(info.value, InvalidUTF8)
    assert info.value.code == 1007


def test_kosme_then_out_of_range_fails_before_the_end() -> None:
    """The κόσμε + F4 90 80 80 sequence raises with final=False, before its last bytes."""
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(KOSME_BAD, final=False)
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(KOSME_BAD[:-2], final=False)


def test_kosme_then_out_of_range_fails_at_the_first_impossible_byte() -> None:
    """Fed byte by byte, the sequence fails on the 0x90 after 0xF4, not later."""
    assert first_failure_byte_by_byte(KOSME_BAD) == KOSME_BAD.index(b"\x90")


def test_valid_prefix_decodes_before_failure() -> None:
    """The valid κόσμε part decodes before the bad bytes arrive."""
    decoder = Utf8Decoder()
    assert decoder.decode(KOSME_BAD[:11]) == KOSME
    assert decoder.decode(b"\xf4") == ""
    with pytest.raises(InvalidUTF8):
        decoder.decode(b"\x90")


@pytest.mark.parametrize("second", [0xA0, 0xAF, 0xBF])
def test_surrogate_prefix_fails_immediately(second: int) -> None:
    """An encoded surrogate prefix ED A0..BF raises at once with final=False."""
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(bytes([0xED, second]), final=False)


def test_surrogate_prefix_fails_when_split() -> None:
    """ED alone is fine; the A0 that follows in the next piece raises."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xed") == ""
    with pytest.raises(InvalidUTF8):
        decoder.decode(b"\xa0")


@pytest.mark.parametrize("data", [b"\xed\xa0\x80", b"ab\xed\xbf\xbfcd"])
def test_surrogate_error_reads_the_same_however_the_text_is_cut(data: bytes) -> None:
    """The early error has the message of the whole decode (it is the close reason sent).

    Found by the fuzzer: cut after ED A0 the reason read "encoded surrogate",
    whole it read "invalid continuation byte".
    """
    messages = set()
    for cut in range(len(data) + 1):
        decoder = Utf8Decoder()
        with pytest.raises(InvalidUTF8) as info:
            decoder.decode(data[:cut])
            decoder.decode(data[cut:], final=True)
        messages.add(str(info.value))
    assert messages == {"invalid UTF-8: invalid continuation byte"}


def test_surrogate_prefix_after_text_fails_immediately() -> None:
    """An encoded surrogate prefix after valid text raises at once."""
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(b"abc\xed\xa0")


def test_highest_non_surrogate_in_ed_range_is_fine() -> None:
    """ED 9F is a valid prefix (U+D7FF) and completes."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xed\x9f") == ""
    assert decoder.decode(b"\xbf", final=True) == "\ud7ff"


@pytest.mark.parametrize(
    "data",
    [
        b"\x80",  # lone continuation byte
        b"\xbf",
        b"\xc0",  # overlong lead bytes
        b"\xc1",
        b"\xf5",  # past U+10FFFF
        b"\xff",
        b"\xe0\x80",  # overlong 3-byte
        b"\xe0\x9f",
        b"\xf0\x80",  # overlong 4-byte
        b"\xf0\x8f",
        b"\xf4\x90",  # over U+10FFFF
        b"\xc3\x28",  # lead byte followed by ASCII
        b"\xe2\x82\x28",
    ],
)
def test_impossible_prefixes_fail_fast(data: bytes) -> None:
    """A prefix no valid text can start with raises with final=False."""
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(data, final=False)


@pytest.mark.parametrize(
    "char", ["a", "é", "€", "κ", "\ud7ff", "\ue000", "\uffff", "😀", "\U0010ffff"]
)
def test_character_split_at_every_position(char: str) -> None:
    """A valid 1- to 4-byte character split anywhere across pieces decodes."""
    encoded = char.encode("utf-8")
    for cut in range(len(encoded) + 1):
        decoder = Utf8Decoder()
        text = decoder.decode(b"x" + encoded[:cut]) + decoder.decode(encoded[cut:], final=True)
        assert text == "x" + char


def test_character_fed_byte_by_byte() -> None:
    """Multi-byte characters fed one byte at a time come out whole."""
    text = "κόσμε – €100 😀 \U0010ffff"
    data = text.encode("utf-8")
    decoder = Utf8Decoder()
    out = "".join(decoder.decode(data[i : i + 1]) for i in range(len(data)))
    assert out + decoder.decode(b"", final=True) == text


@pytest.mark.parametrize("data", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"ok\xe2"])
def test_truncated_character_at_final_fails(data: bytes) -> None:
    """A character cut short at the end of the message raises with final=True."""
    with pytest.raises(InvalidUTF8):
        Utf8Decoder().decode(data, final=True)


@pytest.mark.parametrize("data", [b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98"])
def test_truncated_character_is_held_back_when_not_final(data: bytes) -> None:
    """A valid incomplete character is held back, not rejected, while more may come."""
    decoder = Utf8Decoder()
    assert decoder.decode(data) == ""
    with pytest.raises(InvalidUTF8):
        decoder.decode(b"", final=True)


def test_reset_forgets_a_partial_character() -> None:
    """reset() drops a pending partial character, ready for a new message."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"\xe2\x82") == ""
    decoder.reset()
    assert decoder.decode(b"abc", final=True) == "abc"


def test_reset_after_failure_gives_a_fresh_decoder() -> None:
    """After an error and reset(), the decoder decodes valid text again."""
    decoder = Utf8Decoder()
    with pytest.raises(InvalidUTF8):
        decoder.decode(b"\xff")
    decoder.reset()
    assert decoder.decode("€".encode(), final=True) == "€"


def test_decoder_reused_across_messages() -> None:
    """After a final piece, the next message starts clean."""
    decoder = Utf8Decoder()
    assert decoder.decode("first €".encode(), final=True) == "first €"
    assert decoder.decode(b"second", final=True) == "second"


def test_empty_input() -> None:
    """Empty pieces decode to empty text, final or not."""
    decoder = Utf8Decoder()
    assert decoder.decode(b"") == ""
    assert decoder.decode(b"", final=True) == ""


def test_agrees_with_bytes_decode_on_random_input() -> None:
    """Piecewise decoding accepts exactly what bytes.decode accepts, with the same text."""
    rng = random.Random(6455)
    alphabet = [0x41, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5]
    for _ in range(2000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        cut = rng.randint(0, len(data))
        try:
            expected: Optional[str] = data.decode("utf-8")
        except UnicodeDecodeError:
            expected = None
        decoder = Utf8Decoder()
        try:
            got: Optional[str] = decoder.decode(data[:cut]) + decoder.decode(data[cut:], True)
        except InvalidUTF8:
            got = None
        assert got == expected, data


def test_fails_exactly_at_the_first_non_viable_byte() -> None:
    """Fed byte by byte, the decoder raises at the first byte no valid text could have."""
    rng = random.Random(1007)
    alphabet = [0x41, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xED, 0xF0, 0xF4, 0xF5]
    for _ in range(400):
        data = bytes(rng.choice(alphabet) for _ in range(6))
        expected = next((i for i in range(len(data)) if not viable(data[: i + 1])), None)
        assert first_failure_byte_by_byte(data) == expected, data
