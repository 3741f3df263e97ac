"""Type stub for the optional C accelerator (see ``wsthread/_speedups.c``)."""

from typing import Union

def apply_mask(
    data: Union[bytes, bytearray, memoryview], mask: Union[bytes, bytearray, memoryview], /
) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (masking and unmasking alike)."""
