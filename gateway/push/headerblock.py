"""A lean HPACK encoder (RFC 7541) for the requests the push clients send, and a
decoder for the responses.

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

`BlockDecoder` decodes the responses' blocks (`decode(block)` gives [(name, value)] as
str), keeping the dynamic table in step with the server's encoder whatever a block holds.
hpack's Decoder did the same at a tenth of a push's CPU: its Huffman decoder walks each
string four bits at a time in Python. Here Huffman strings go to `gateway.push.huffman`
(compiled in `_ext/huffman.pyx`: the `apns-id` of every answer is one), and a
response's usual block (`:status 200` indexed, `apns-id` as a new literal) takes a
handful of operations. It raises hpack's
errors for what hpack refuses: bad indexes, truncation, bad padding or EOS, a table size
update above the allowed size or after a field, a header list over 64 KiB, non-UTF-8.

Depends on hpack (the header tuple classes, the static table and the errors) and
`gateway.push.huffman` (through `gateway._accel`) only.
"""

from __future__ import annotations

from collections import deque

from hpack import HeaderTuple, HPACKDecodingError, InvalidTableSizeError, NeverIndexedHeaderTuple
from hpack import OversizedHeaderListError
from hpack.table import HeaderTable

from gateway import _accel

#: RFC 7541 5.2 Huffman decoding, compiled (`_ext/huffman.pyx`) or its twin
decode_huffman = _accel.load("_huffman", "push.huffman").decode_huffman

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


# -- decoding ------------------------------------------------------------------------------

#: (name, value, entry size in octets) of the static table, then of the dynamic one
_STATIC = [(name.decode(), value.decode(), len(name) + len(value) + 32)
           for name, value in HeaderTable.STATIC_TABLE]
_STATIC_COUNT = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1
def decode_integer(data: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    """RFC 7541 5.1 at data[i]: (value, index after it); at most 5 bytes, as hpack."""
    limit = (1 << prefix_bits) - 1
    try:
        value = data[i] & limit
        i += 1
        if value < limit:
            return value, i
        shift = 0
        for _ in range(5):
            byte = data[i]
            i += 1
            value += (byte & 127) << shift
            if byte < 128:
                return value, i
            shift += 7
    except IndexError:
        raise HPACKDecodingError("truncated integer in a header block") from None
    raise HPACKDecodingError("integer too long in a header block")


class BlockDecoder:
    """The decoding side of one connection's HPACK context (`decode(block)`)."""

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 1 << 16):
        #: the largest table size the encoder may set (our SETTINGS_HEADER_TABLE_SIZE)
        self.max_allowed_table_size = max_table_size
        self.max_header_list_size = max_header_list_size
        self._table: deque[tuple[str, str, int]] = deque()  # newest first, with sizes
        self._size = 0
        self._max_size = max_table_size

    def _field(self, index: int) -> tuple[str, str, int]:
        if 0 < index <= _STATIC_COUNT:
            return _STATIC[index - 1]
        index -= _STATIC_COUNT + 1
        if 0 <= index < len(self._table):
            return self._table[index]
        raise HPACKDecodingError(f"header table index {index + _STATIC_COUNT + 1} out of range")

    def _add(self, name: str, value: str, size: int) -> None:
        table = self._table
        table.appendleft((name, value, size))
        self._size += size
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._size > self._max_size:
            self._size -= table.pop()[2]

    def _string(self, data: bytes, i: int) -> tuple[bytes, int]:
        huffman = data[i] & 0x80 if i < len(data) else 0
        length, i = decode_integer(data, i, 7)
        end = i + length
        if end > len(data):
            raise HPACKDecodingError("truncated header block")
        raw = data[i:end]
        return (decode_huffman(raw) if huffman else raw), end

    def decode(self, data: bytes) -> list[tuple[str, str]]:
        """The fields of one complete header block, in order, as str."""
        fields: list[tuple[str, str]] = []
        inflated = 0
        i, n = 0, len(data)
        try:
            while i < n:
                first = data[i]
                if first & 0x80:  # indexed field
                    index, i = decode_integer(data, i, 7)
                    name, value, size = self._field(index)
                elif first & 0x20 and not first & 0x40:  # dynamic table size update
                    if fields:
                        raise HPACKDecodingError("table size update not at the start of the block")
                    size, i = decode_integer(data, i, 5)
                    if size > self.max_allowed_table_size:
                        raise InvalidTableSizeError("encoder exceeded the allowed table size")
                    self._max_size = size
                    self._evict()
                    continue
                else:  # a literal: with incremental indexing (01), without (0000), never (0001)
                    indexing = first & 0x40
                    index, i = decode_integer(data, i, 6 if indexing else 4)
                    if index:
                        name = self._field(index)[0]
                        size = (len(name) if name.isascii() else len(name.encode())) + _ENTRY_OVERHEAD
                    else:
                        name_bytes, i = self._string(data, i)
                        name, size = name_bytes.decode(), len(name_bytes) + _ENTRY_OVERHEAD
                    value_bytes, i = self._string(data, i)
                    value = value_bytes.decode()
                    size += len(value_bytes)  # octets (RFC 7541 4.1), as the encoder counted
                    if indexing:
                        self._add(name, value, size)
                fields.append((name, value))
                inflated += size
                if inflated > self.max_header_list_size:
                    raise OversizedHeaderListError(
                        f"a header list larger than {self.max_header_list_size} was received")
        except UnicodeDecodeError as exc:
            raise HPACKDecodingError("header block not UTF-8") from exc
        return fields


__all__ = ["LiteralEncoder", "BlockDecoder", "NeverIndexedHeaderTuple", "encode_field",
           "encode_integer", "decode_huffman", "decode_integer"]
