"""The orjson stand-in (tests/orjson_standin.py) behaves as orjson where tests/test_json.py looks.

Each check runs on the stand-in and on ``orjson`` itself (the real one where
it is installed; on free-threaded builds, where it cannot be, the stand-in
takes its name), against the bytes orjson is known to produce.
"""

from __future__ import annotations

import json
from types import ModuleType

import orjson
import pytest

import orjson_standin


@pytest.fixture(params=["stand-in", "orjson"])
def module(request: pytest.FixtureRequest) -> ModuleType:
    """The stand-in, then whatever ``import orjson`` gives."""
    return orjson_standin if request.param == "stand-in" else orjson


def test_dumps_gives_compact_utf8_bytes(module: ModuleType) -> None:
    """Bytes, no spaces, non-ASCII as UTF-8 rather than escapes."""
    assert module.dumps({"a": [1, 2], "é": None}) == b'{"a":[1,2],"\xc3\xa9":null}'


def test_loads_takes_bytes_and_text(module: ModuleType) -> None:
    """Bytes and str decode alike."""
    assert module.loads(b'{"x": [true]}') == module.loads('{"x": [true]}') == {"x": [True]}


@pytest.mark.parametrize("bad", [b"[1, 2", b"\xff", "{not json"])
def test_bad_input_raises_its_json_decode_error(module: ModuleType, bad: object) -> None:
    """Bad JSON or bad UTF-8: the module's JSONDecodeError, a json.JSONDecodeError."""
    with pytest.raises(module.JSONDecodeError) as caught:
        module.loads(bad)
    assert isinstance(caught.value, json.JSONDecodeError)


def test_what_json_cannot_encode_is_a_type_error(module: ModuleType) -> None:
    """An object JSON has no form for raises TypeError, as with json.dumps."""
    with pytest.raises(TypeError):
        module.dumps({"when": object()})
