"""A lean HPACK encoder (RFC 7541) for the requests the push clients send.

`LiteralEncoder` makes the header blocks of `gateway.push.http2.Http2Connection` (which
owns the connection's state: stream ids, flow-control windows, frames; it also has the
`hpack.Encoder` interface h2 uses: `encode(headers)`, `header_table_size`). It never
uses the dynamic table:
- a field that matches the static table exactly (":method: POST", ":scheme: https")
  goes as a one-byte index;
- every other field is a literal without indexing (or "never indexed" for the
  `hpack.NeverIndexedHeaderTuple`s, which intermediaries must then not index either),
  its name as a static-table index when the table has it, no Huffman coding.

Why: hpack's encoder Huffman-codes every literal in pure Python and searches its tables
for every field, which was most of the CPU of a push (a 200-byte provider token, a
64-byte device path, a UUID per request); a literal costs a few byte copies. The price is
bytes on the wire (the provider token is sent whole each time instead of as an index),
nothing next to the TLS records they travel in.

A decoder may lower its table size through SETTINGS: the connection then sets `header_table_size`,
and the next block starts with a size update (to 0: we never insert anything, so an
empty table is always right). The first block says so too.

Depends on hpack (the header tuple classes and the static table) only.
"""

from __future__ import annotations

from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.table import HeaderTable

# name -> static index (the first one with that name); (name, value) -> static index
_NAMES: dict[bytes, int] = {}
_FIELDS: dict[tuple[bytes, bytes], int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _NAMES.setdefault(_name, _index)
    _FIELDS.setdefault((_name, _value), _index)

_TABLE_SIZE_ZERO = b"\x20"  # 001 00000: dynamic table size update to 0


def encode_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 5.1: `value` with an N-bit prefix, `first` holding the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_field(name: bytes, value: bytes, never_indexed: bool = False) -> bytes:
    """One header field as RFC 7541 6.1 (indexed, static table) or 6.2.2 / 6.2.3."""
    if not never_indexed:
        index = _FIELDS.get((name, value))
        if index is not None:
            return bytes((0x80 | index,))
    pattern = 0x10 if never_indexed else 0x00
    index = _NAMES.get(name)
    if index is not None:
        head = encode_integer(index, 4, pattern)
    else:
        head = bytes((pattern,)) + encode_integer(len(name), 7, 0) + name
    return head + encode_integer(len(value), 7, 0) + value


class LiteralEncoder:
    """An HPACK encoder that never indexes: `encode(headers)` and `header_table_size`.

    The encoded form of the fields that repeat from request to request (method, scheme,
    authority, topic, push type, the provider token) is remembered; fields passed as
    `NeverIndexedHeaderTuple` (unique per request, or secret) never are."""

    CACHE_SIZE = 64

    def __init__(self) -> None:
        self._size_update = True  # say "no dynamic table" in the first block
        self._table_size = 4096
        self._cache: dict[tuple, bytes] = {}

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value
        self._size_update = True

    def encode(self, headers, huffman: bool = True) -> bytes:
        parts = []
        if self._size_update:
            self._size_update = False
            parts.append(_TABLE_SIZE_ZERO)
        cache = self._cache
        for header in headers:
            never = isinstance(header, HeaderTuple) and not header.indexable
            if not never:
                encoded = cache.get(header)
                if encoded is not None:
                    parts.append(encoded)
                    continue
            name, value = header[0], header[1]
            if isinstance(name, str):
                name = name.encode("utf-8")
            if isinstance(value, str):
                value = value.encode("utf-8")
            encoded = encode_field(name.lower(), value, never)  # HTTP/2 names are lowercase
            if not never:
                if len(cache) >= self.CACHE_SIZE:
                    cache.clear()  # e.g. a per-request value passed as indexable
                cache[(header[0], header[1])] = encoded
            parts.append(encoded)
        return b"".join(parts)


__all__ = ["LiteralEncoder", "NeverIndexedHeaderTuple", "encode_field", "encode_integer"]
