"""Decoding RFC 7541 5.2 Huffman-coded strings (the values of an HTTP/2 response's
header block): `decode_huffman(data) -> bytes`.

A string is decoded a byte at a time through a table of (state, byte) -> (state,
output) that fills itself in as states are met (a few hundred entries for what APNs
sends). Padding must be under 8 bits, all ones; the EOS symbol inside a string is an
error (hpack's HPACKDecodingError, as hpack's own decoder raises).

This is the pure-Python twin of `_ext/huffman.pyx`; `gateway.push.headerblock` picks
one through `gateway._accel`. Depends on hpack (the Huffman code and its error) only.
"""

from __future__ import annotations

from hpack import HPACKDecodingError
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

_EOS = 256

# A decoding state is the bits read since the last symbol, as an int with a leading 1
# bit (1: nothing pending). Codes in that form -> symbol.
_CODES = {(1 << length) | code: symbol
          for symbol, (code, length) in enumerate(zip(REQUEST_CODES, REQUEST_CODES_LENGTH))}
#: (state << 8 | byte) -> (state after the byte, the bytes it completed); None: EOS met
_STEPS: dict[int, tuple[int, bytes] | None] = {}


def _step(key: int) -> tuple[int, bytes] | None:
    state, byte = key >> 8, key & 0xFF
    out = bytearray()
    for shift in range(7, -1, -1):
        state = state << 1 | (byte >> shift) & 1
        symbol = _CODES.get(state)
        if symbol is not None:
            if symbol == _EOS:
                _STEPS[key] = None
                return None
            out.append(symbol)
            state = 1
    # the code is complete (every 30-bit string starts with a code): states stay small
    _STEPS[key] = step = (state, bytes(out))
    return step


def decode_huffman(data: bytes) -> bytes:
    """RFC 7541 5.2: a Huffman-coded string; padding must be under 8 bits of 1s."""
    state = 1
    out = []
    steps = _STEPS
    for byte in data:
        key = state << 8 | byte
        step = steps.get(key) or _step(key)
        if step is None:
            raise HPACKDecodingError("EOS in a Huffman-coded string")
        state, done = step
        if done:
            out.append(done)
    if state != 1:
        bits = state.bit_length() - 1
        if bits > 7 or state != (1 << (bits + 1)) - 1:
            raise HPACKDecodingError("bad padding of a Huffman-coded string")
    return b"".join(out)
