"""A stand-in for ``orjson`` built on the standard ``json``: the part tests/test_json.py uses.

orjson has no wheel for free-threaded CPython 3.13t and its sdist needs Rust
crates from the network, so it cannot be installed there. What
tests/test_json.py checks with it is wsthread's side: an encoder that
returns ``bytes`` (sent as a text message) and a decoder that accepts bytes
and raises its own ``JSONDecodeError`` (turned into ``InvalidJSON``).
``tests/conftest.py`` puts this module in orjson's place only when ``import
orjson`` fails; where orjson is installed (the main suite) the real one is used.
"""

from __future__ import annotations

import json
from typing import Any, Union

__all__ = ["JSONDecodeError", "dumps", "loads"]


class JSONDecodeError(json.JSONDecodeError):
    """Raised by :func:`loads` for bad JSON (as orjson's, a subclass of json's)."""


def dumps(obj: Any) -> bytes:
    """``obj`` as compact UTF-8 JSON bytes, as ``orjson.dumps`` gives (TypeError if it cannot)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: Union[bytes, bytearray, memoryview, str]) -> Any:
    """Decode JSON from bytes or text, as ``orjson.loads`` does."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONDecodeError(f"not valid UTF-8: {exc.reason}", "", exc.start) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONDecodeError(exc.msg, exc.doc, exc.pos) from None
